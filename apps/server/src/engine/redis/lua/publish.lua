-- Publishes one message atomically: epoch check, dedupe, next offset,
-- append to the capped stream, fan out on the room channel.
-- KEYS[1] meta hash (epoch, offset)   KEYS[2] stream   KEYS[3] dedupe key
-- ARGV[1] channel  ARGV[2] epoch to create when missing or diverged
-- ARGV[3] stream cap  ARGV[4] dedupe ttl (s)
-- ARGV[5] stored message (JSON, without offset)
-- ARGV[6] epoch and ARGV[7] offset the publishing instance has seen
--         ('' and 0: none)
-- ARGV[8] retention (ms): the room's keys live that much longer
-- ARGV[9] '1' when an archive keeps every message (--database-url): a
--         room without an epoch is restored from the archive first, and
--         the stream is trimmed to the cap or to the oldest message not
--         archived yet (meta field `archived`), whichever keeps more
-- Returns {epoch, offset, duplicate (0|1)}; with an archive, {'', 0, 0}
-- when the room has no epoch (the engine restores it, then publishes).
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch and ARGV[9] == '1' then
  return {'', 0, 0}
elseif not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
  -- History of an epoch nobody knows any more cannot be offered.
  redis.call('DEL', KEYS[2])
elseif epoch == ARGV[6]
    and tonumber(redis.call('HGET', KEYS[1], 'offset')) < tonumber(ARGV[7]) then
  -- The offset went back within the epoch: this store lost messages that
  -- were delivered (an older snapshot, a lagging replica promoted). The
  -- retained history becomes a new epoch's, and every instance is told.
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call(PUBLISH, ARGV[1], 'e ' .. epoch)
end
local prev = redis.call('GET', KEYS[3])
if prev then
  return {epoch, tonumber(prev), 1}
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
if ARGV[9] == '1' then
  redis.call('XADD', KEYS[2], offset .. '-0', 'm', ARGV[5])
  local archived = tonumber(redis.call('HGET', KEYS[1], 'archived')) or 0
  redis.call('XTRIM', KEYS[2], 'MAXLEN', math.max(tonumber(ARGV[3]), offset - archived))
else
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], offset .. '-0', 'm', ARGV[5])
end
redis.call('SET', KEYS[3], offset, 'EX', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[8])
redis.call('PEXPIRE', KEYS[2], ARGV[8])
redis.call(PUBLISH, ARGV[1], 'm ' .. epoch .. ' ' .. offset .. ' ' .. ARGV[5])
return {epoch, offset, 0}
