-- The room's epoch and latest offset, creating the epoch when missing;
-- the room's keys live one retention period more (a join is activity).
-- KEYS[1] meta hash  KEYS[2] stream   ARGV[1] epoch to create when missing
-- ARGV[2] retention (ms)
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'offset', 0)
  redis.call('DEL', KEYS[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return redis.call('HMGET', KEYS[1], 'epoch', 'offset')
