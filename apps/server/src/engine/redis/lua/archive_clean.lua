-- Takes a room off its partition's list of rooms to archive, unless it was
-- marked again after the sweep read the list (a newer score).
-- KEYS[1] the partition's dirty zset  ARGV[1] room  ARGV[2] score read
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
