-- Archived: the entries leave the consumer group's pending list; the
-- room's `archived` offset rises to the highest offset below which every
-- entry is archived (entries still pending to any consumer hold it back),
-- when the room's epoch is still the one the entries were archived under;
-- the stream is trimmed to the cap or to the oldest entry not archived,
-- whichever keeps more; and every subscribed instance is told
-- ('a <epoch> <offset>' on the channel: it drops what it held of the room
-- against a wipe of the store).
-- KEYS[1] meta hash  KEYS[2] stream
-- ARGV[1] group  ARGV[2] epoch  ARGV[3] highest offset archived now
-- ARGV[4] channel  ARGV[5] stream cap  ARGV[6..] entry ids
-- Returns the room's archived offset (0 when its epoch changed or it is gone).
local archived = tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[2]) == 1 then
  if #ARGV > 5 then
    redis.call('XACK', KEYS[2], ARGV[1], unpack(ARGV, 6))
  end
  local ok, pending = pcall(redis.call, 'XPENDING', KEYS[2], ARGV[1])
  if ok and pending[1] > 0 then
    local lowest = tonumber(string.match(pending[2], '^(%d+)'))
    archived = math.min(archived, lowest - 1)
  end
end
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then
  return 0
end
local before = tonumber(redis.call('HGET', KEYS[1], 'archived')) or 0
if archived > before then
  redis.call('HSET', KEYS[1], 'archived', archived)
else
  archived = before
end
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset')) or 0
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('XTRIM', KEYS[2], 'MAXLEN', math.max(tonumber(ARGV[5]), offset - archived))
end
redis.call(PUBLISH, ARGV[4], 'a ' .. ARGV[2] .. ' ' .. archived)
return archived
