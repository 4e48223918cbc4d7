-- Removes users whose every instance stopped refreshing (a crashed
-- instance) and announces that they left; expiry by the store's clock.
-- Two looks, so that every key a script touches is declared (Redis Cluster
-- routes and migrates by declared keys): called with no users, it answers
-- the expired ones; called with them and their hashes, it sweeps those
-- still expired.
-- KEYS[1] users zset  KEYS[2] names hash  KEYS[2+i] the hash of ARGV[1+i]
-- ARGV[1] channel  ARGV[1+i] a user expired at the first look
-- Returns {the room's live member count, (first look) expired users...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do
  local uid = ARGV[i]
  local key = KEYS[i + 1]
  local score = redis.call('ZSCORE', KEYS[1], uid)
  if score and tonumber(score) <= now then
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
      redis.call(PUBLISH, ARGV[1], 'p l ' .. uid .. ' ' .. name)
    end
  end
end
local out = {redis.call('ZCOUNT', KEYS[1], now, '+inf')}
if #ARGV == 1 then
  for _, uid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
    out[#out + 1] = uid
  end
end
return out
