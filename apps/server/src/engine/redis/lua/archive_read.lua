-- Before reading a room to archive: its epoch, its stream's consumer group
-- (created at the stream's first entry when missing), and the entries
-- pending to any consumer for at least ARGV[4] ms (its instance died
-- mid-batch), claimed. The entries never delivered to the group are read
-- after the script (`XREADGROUP … >`: Redis 5 refuses it in scripts).
-- KEYS[1] meta hash  KEYS[2] stream
-- ARGV[1] group  ARGV[2] consumer (this instance)  ARGV[3] most entries
-- ARGV[4] claim entries pending this long (ms); 0: claim none
-- Returns {epoch, claimed entries}; {'', {}} when the room has no epoch or
-- no stream.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch or redis.call('EXISTS', KEYS[2]) == 0 then
  return {'', {}}
end
-- BUSYGROUP (it exists) is the usual answer.
pcall(redis.call, 'XGROUP', 'CREATE', KEYS[2], ARGV[1], '0')
local claimed = {}
local idle = tonumber(ARGV[4])
if idle > 0 then
  local ids = {}
  for _, p in ipairs(redis.call('XPENDING', KEYS[2], ARGV[1], '-', '+', ARGV[3])) do
    if p[3] >= idle then
      ids[#ids + 1] = p[1]
    end
  end
  if #ids > 0 then
    claimed = redis.call('XCLAIM', KEYS[2], ARGV[1], ARGV[2], idle, unpack(ids))
  end
end
return {epoch, claimed}
