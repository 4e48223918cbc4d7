-- Publishes one message atomically: dedupe, next offset, append to the
-- capped stream, fan out on the room channel.
-- KEYS[1] meta hash (epoch, offset)   KEYS[2] stream   KEYS[3] dedupe key
-- ARGV[1] channel  ARGV[2] epoch to create when missing  ARGV[3] stream cap
-- ARGV[4] dedupe ttl (s)  ARGV[5] stored message (JSON, without offset)
-- Returns {epoch, offset, duplicate (0|1)}.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
  -- History of an epoch nobody knows any more cannot be offered.
  redis.call('DEL', KEYS[2])
end
local prev = redis.call('GET', KEYS[3])
if prev then
  return {epoch, tonumber(prev), 1}
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], offset .. '-0', 'm', ARGV[5])
redis.call('SET', KEYS[3], offset, 'EX', ARGV[4])
redis.call('PUBLISH', ARGV[1], 'm ' .. epoch .. ' ' .. offset .. ' ' .. ARGV[5])
return {epoch, offset, 0}
