-- Gives a room the store does not know (wiped, replaced, expired) the
-- epoch and offset the archive has for it, so offsets continue; unless an
-- instance did already. Everything up to the offset is in the archive.
-- KEYS[1] meta hash  KEYS[2] stream
-- ARGV[1] epoch  ARGV[2] offset  ARGV[3] retention (ms)
-- ARGV[4] lifetime of a room without messages (ms)
-- Returns 1 when this call restored the room, 0 otherwise.
if redis.call('HEXISTS', KEYS[1], 'epoch') == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'offset', ARGV[2], 'archived', ARGV[2])
local keep = ARGV[3]
if tonumber(ARGV[2]) == 0 then
  keep = ARGV[4]
end
redis.call('PEXPIRE', KEYS[1], keep)
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], keep)
end
return 1
