-- Marks a user present in a room through one instance for `ttl` ms of the
-- store's clock (TIME: instance clocks may disagree), also the periodic
-- refresh. Announces the user when it was present nowhere.
-- KEYS[1] users zset (user id -> latest expiry)  KEYS[2] names hash
-- KEYS[3] the user's hash (instance -> expiry)
-- KEYS[4] meta hash  KEYS[5] stream: a room with members stays, so they
--   live one more retention period (one TTL while it has no message:
--   position.lua)
-- ARGV[1] user id  ARGV[2] instance  ARGV[3] ttl (ms)  ARGV[4] name
-- ARGV[5] channel  ARGV[6] retention (ms)
-- Returns the room's live member count (users with an unexpired entry).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[3], ARGV[2], now + tonumber(ARGV[3]))
local latest = 0
for _, v in ipairs(redis.call('HVALS', KEYS[3])) do
  local n = tonumber(v)
  if n > latest then latest = n end
end
redis.call('PEXPIREAT', KEYS[3], latest)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local present = score and tonumber(score) > now
redis.call('ZADD', KEYS[1], latest, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
-- Every entry expires by now + ttl at the latest, so the set and the names
-- may too: an entry a refresh wrote after its user's leave (the two
-- crossed) does not keep the keys for ever.
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local keep = ARGV[6]
if tonumber(redis.call('HGET', KEYS[4], 'offset') or '0') == 0 then
  keep = ARGV[3]
end
redis.call('PEXPIRE', KEYS[4], keep)
redis.call('PEXPIRE', KEYS[5], keep)
if not present then
  redis.call(PUBLISH, ARGV[5], 'p j ' .. ARGV[1] .. ' ' .. ARGV[4])
end
return redis.call('ZCOUNT', KEYS[1], now, '+inf')
