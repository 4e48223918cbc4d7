-- The room's epoch and latest offset, creating the epoch when missing.
-- KEYS[1] meta hash  KEYS[2] stream   ARGV[1] epoch to create when missing
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'offset', 0)
  redis.call('DEL', KEYS[2])
end
return redis.call('HMGET', KEYS[1], 'epoch', 'offset')
