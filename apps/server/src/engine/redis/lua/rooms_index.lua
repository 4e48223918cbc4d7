-- One partition of the rooms index (keys.rs: a room is listed in the
-- partition its name hashes to; a `rooms` page merges them): which rooms
-- are active (room -> latest presence expiry, by the store's clock) and in
-- what order (entries '<10-digit 9999999999 - members>:<room>', all scored
-- 0, so ZRANGEBYLEX lists the busiest first and ties by name).
-- KEYS[1] active zset  KEYS[2] order zset  KEYS[3] count hash (room ->
--   members: the order entry to replace)
-- ARGV[1] 'touch': ARGV[2] room, ARGV[3] ttl (ms), ARGV[4] the room's live
--   member count (what the presence scripts return). The room is active for
--   ttl more, never shortened (what ZADD GT does, written out: GT needs
--   Redis 6.2, and managed services still run 6.0); 0 members removes it.
-- ARGV[1] 'expire': drop rooms whose expiry passed (their instances
--   stopped refreshing them).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function entry(room, members)
  return string.format('%010d', 9999999999 - members) .. ':' .. room
end
local function unlist(room)
  local old = redis.call('HGET', KEYS[3], room)
  if old then
    redis.call('ZREM', KEYS[2], entry(room, tonumber(old)))
    redis.call('HDEL', KEYS[3], room)
  end
  return redis.call('ZREM', KEYS[1], room)
end
if ARGV[1] == 'touch' then
  local room = ARGV[2]
  local members = tonumber(ARGV[4])
  if members <= 0 then
    return unlist(room)
  end
  local old = tonumber(redis.call('HGET', KEYS[3], room) or '0')
  if old ~= members then
    if old > 0 then
      redis.call('ZREM', KEYS[2], entry(room, old))
    end
    redis.call('ZADD', KEYS[2], 0, entry(room, members))
    redis.call('HSET', KEYS[3], room, members)
  end
  local expiry = now + tonumber(ARGV[3])
  local current = redis.call('ZSCORE', KEYS[1], room)
  if current and tonumber(current) >= expiry then
    return 0
  end
  return redis.call('ZADD', KEYS[1], expiry, room)
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, room in ipairs(gone) do
  unlist(room)
end
return #gone
