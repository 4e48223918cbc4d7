-- Claims, renews or releases an instance id (presence entries are keyed
-- by it, so two live processes must never share one).
-- KEYS[1] the id's key   ARGV[1] this process's nonce
-- ARGV[2] 'claim' with ARGV[3] ttl (ms), or 'release'
-- Returns 1 when this process holds (held) the id, 0 when another does.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
if ARGV[2] == 'claim' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
elseif holder then
  redis.call('DEL', KEYS[1])
end
return 1
