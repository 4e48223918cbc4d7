-- The rooms index: which rooms are active (room -> latest presence expiry,
-- by the store's clock) and how many members each has (room -> -members,
-- so ZRANGE lists the busiest first and ties by name: one read of one
-- index answers a page of `rooms`).
-- KEYS[1] rooms zset (expiry)  KEYS[2] rooms-by-members zset (-members)
-- ARGV[1] 'touch': ARGV[2] room, ARGV[3] ttl (ms), ARGV[4] the room's live
--   member count (what the presence scripts return). The room is active for
--   ttl more, never shortened (what ZADD GT does, written out: GT needs
--   Redis 6.2, and managed services still run 6.0); 0 members removes it.
-- ARGV[1] 'expire': drop rooms whose expiry passed (their instances
--   stopped refreshing them) from both.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == 'touch' then
  local members = tonumber(ARGV[4])
  if members <= 0 then
    redis.call('ZREM', KEYS[1], ARGV[2])
    return redis.call('ZREM', KEYS[2], ARGV[2])
  end
  redis.call('ZADD', KEYS[2], -members, ARGV[2])
  local expiry = now + tonumber(ARGV[3])
  local current = redis.call('ZSCORE', KEYS[1], ARGV[2])
  if current and tonumber(current) >= expiry then
    return 0
  end
  return redis.call('ZADD', KEYS[1], expiry, ARGV[2])
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, room in ipairs(gone) do
  redis.call('ZREM', KEYS[2], room)
end
return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
