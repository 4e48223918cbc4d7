-- Marks a user present in a room through one instance until `expiry`
-- (also the periodic refresh). Announces the user when it was present nowhere.
-- KEYS[1] users zset (user id -> latest expiry)  KEYS[2] names hash
-- KEYS[3] the user's hash (instance -> expiry)
-- ARGV[1] user id  ARGV[2] instance  ARGV[3] expiry (ms)  ARGV[4] now (ms)
-- ARGV[5] name  ARGV[6] channel
-- Returns 1 when the user was announced.
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
local latest = 0
for _, v in ipairs(redis.call('HVALS', KEYS[3])) do
  local n = tonumber(v)
  if n > latest then latest = n end
end
redis.call('PEXPIREAT', KEYS[3], latest)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local present = score and tonumber(score) > tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], latest, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
if present then
  return 0
end
redis.call('PUBLISH', ARGV[6], 'p j ' .. ARGV[1] .. ' ' .. ARGV[5])
return 1
