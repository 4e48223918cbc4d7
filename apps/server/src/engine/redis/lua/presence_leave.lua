-- An instance has no connection of the user in the room any more. The user
-- leaves when no other instance holds an unexpired entry (by the store's
-- clock).
-- KEYS[1] users zset  KEYS[2] names hash  KEYS[3] the user's hash
-- ARGV[1] user id  ARGV[2] instance  ARGV[3] channel
-- Returns the room's live member count after it.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HDEL', KEYS[3], ARGV[2])
local latest = 0
for _, v in ipairs(redis.call('HVALS', KEYS[3])) do
  local n = tonumber(v)
  if n > latest then latest = n end
end
if latest > now then
  redis.call('ZADD', KEYS[1], 'XX', latest, ARGV[1])
  redis.call('PEXPIREAT', KEYS[3], latest)
else
  redis.call('DEL', KEYS[3])
  local name = redis.call('HGET', KEYS[2], ARGV[1]) or ''
  redis.call('HDEL', KEYS[2], ARGV[1])
  if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
    redis.call(PUBLISH, ARGV[3], 'p l ' .. ARGV[1] .. ' ' .. name)
  end
end
return redis.call('ZCOUNT', KEYS[1], now, '+inf')
