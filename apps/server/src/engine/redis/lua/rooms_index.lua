-- The rooms index (room -> latest presence expiry), by the store's clock.
-- KEYS[1] rooms zset
-- ARGV[1] 'touch': ARGV[2] room, ARGV[3] ttl (ms): the room is active for
--   ttl more, never shortened (what ZADD GT does, written out: GT needs
--   Redis 6.2, and managed services still run 6.0)
-- ARGV[1] 'expire': drop rooms whose expiry passed
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == 'touch' then
  local expiry = now + tonumber(ARGV[3])
  local current = redis.call('ZSCORE', KEYS[1], ARGV[2])
  if current and tonumber(current) >= expiry then
    return 0
  end
  return redis.call('ZADD', KEYS[1], expiry, ARGV[2])
end
return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
