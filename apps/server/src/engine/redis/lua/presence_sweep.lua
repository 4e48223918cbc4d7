-- Removes users whose every instance stopped refreshing (a crashed
-- instance) and announces that they left; expiry by the store's clock.
-- KEYS[1] users zset  KEYS[2] names hash
-- ARGV[1] prefix of the users' hashes  ARGV[2] channel
-- The users' hashes share the room's hash tag, so this stays in one slot.
-- Returns the room's live member count after the sweep.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, uid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  local key = ARGV[1] .. uid
  local latest = 0
  for _, v in ipairs(redis.call('HVALS', key)) do
    local n = tonumber(v)
    if n > latest then latest = n end
  end
  if latest > now then
    redis.call('ZADD', KEYS[1], 'XX', latest, uid)
  else
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], uid)
    local name = redis.call('HGET', KEYS[2], uid) or ''
    redis.call('HDEL', KEYS[2], uid)
    redis.call('PUBLISH', ARGV[2], 'p l ' .. uid .. ' ' .. name)
  end
end
return redis.call('ZCOUNT', KEYS[1], now, '+inf')
