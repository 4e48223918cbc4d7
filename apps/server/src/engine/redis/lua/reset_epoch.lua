-- Gives a room whose history diverged a new epoch, unless another instance
-- did already (or the store was wiped: the next position read creates one).
-- KEYS[1] meta hash   ARGV[1] the diverged epoch   ARGV[2] the new epoch
-- ARGV[3] channel
-- Returns 1 when the epoch changed, 0 otherwise.
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'epoch', ARGV[2])
redis.call(PUBLISH, ARGV[3], 'e ' .. ARGV[2])
return 1
