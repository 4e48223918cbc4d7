-- The readiness probe: every command the server's scripts run, on this
-- instance's probe keys, so that a replica (READONLY: a demoted primary)
-- or a user missing a permission (NOPERM, naming the command) fails here,
-- where it makes the instance not ready, instead of on a member's publish.
-- KEYS[1] string  KEYS[2] hash  KEYS[3] stream  KEYS[4] zset
-- KEYS[5] scratch  ARGV[1] channel
-- ARGV[2] '1' with an archive: the archiver's commands too (lua/restore.lua,
--         lua/archive_*.lua), on a stream with a consumer group made in the
--         scratch key (XREADGROUP, which Redis 5 refuses in scripts, runs on
--         it after the script)
-- Returns the store's clock (ms).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local later = now + 60000
redis.call('SET', KEYS[1], now, 'PX', 60000)
redis.call('GET', KEYS[1])
redis.call('HSETNX', KEYS[2], 'epoch', 'probe')
redis.call('HSET', KEYS[2], 'offset', 0)
redis.call('HINCRBY', KEYS[2], 'offset', 1)
redis.call('HGET', KEYS[2], 'offset')
redis.call('HMGET', KEYS[2], 'epoch', 'offset')
redis.call('HVALS', KEYS[2])
redis.call('HDEL', KEYS[2], 'none')
redis.call('XADD', KEYS[3], 'MAXLEN', 1, '*', 'm', 'probe')
redis.call('ZADD', KEYS[4], later, 'probe')
redis.call('ZSCORE', KEYS[4], 'probe')
redis.call('ZRANGEBYSCORE', KEYS[4], now, '+inf')
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - 1)
redis.call('ZREM', KEYS[4], 'none')
redis.call('DEL', KEYS[5])
redis.call('PEXPIRE', KEYS[1], 60000)
redis.call('PEXPIREAT', KEYS[2], later)
redis.call('PEXPIREAT', KEYS[3], later)
redis.call('PEXPIREAT', KEYS[4], later)
if ARGV[2] == '1' then
  redis.call('HEXISTS', KEYS[2], 'epoch')
  redis.call('EXISTS', KEYS[3])
  redis.call('XTRIM', KEYS[3], 'MAXLEN', 1)
  redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')
  redis.call('XGROUP', 'CREATE', KEYS[5], 'archive', '0', 'MKSTREAM')
  redis.call('XPENDING', KEYS[5], 'archive')
  redis.call('XPENDING', KEYS[5], 'archive', '-', '+', 1)
  redis.call('XCLAIM', KEYS[5], 'archive', 'probe', 0, '0-1')
  redis.call('XACK', KEYS[5], 'archive', '0-1')
  redis.call('PEXPIRE', KEYS[5], 60000)
end
redis.call(PUBLISH, ARGV[1], 'probe')
return now
