-- The users present in a room now, by the store's clock, with their names.
-- KEYS[1] users zset  KEYS[2] names hash
-- Returns {id1, name1, id2, name2, ...} (a missing name is '').
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, uid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  out[#out + 1] = uid
  out[#out + 1] = redis.call('HGET', KEYS[2], uid) or ''
end
return out
