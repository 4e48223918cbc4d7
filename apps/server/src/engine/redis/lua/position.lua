-- The room's epoch and latest offset, creating the epoch when missing;
-- the room's keys live one retention period more (a join is activity), or,
-- while the room never had a message, one presence TTL (its members'
-- refreshes keep it; once they leave it ends soon: a join of a fresh name
-- costs the store nothing for long).
-- KEYS[1] meta hash  KEYS[2] stream   ARGV[1] epoch to create when missing
-- ARGV[2] retention (ms)  ARGV[3] lifetime of a room without messages (ms)
-- ARGV[4] '1' when an archive keeps every message: a room without an epoch
--         is not created here but answered {'', 0} (the engine restores it
--         from the archive, then asks again)
if ARGV[4] == '1' and redis.call('HEXISTS', KEYS[1], 'epoch') == 0 then
  return {'', '0'}
end
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'offset', 0)
  redis.call('DEL', KEYS[2])
end
local keep = ARGV[2]
if tonumber(redis.call('HGET', KEYS[1], 'offset')) == 0 then
  keep = ARGV[3]
end
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
return redis.call('HMGET', KEYS[1], 'epoch', 'offset')
