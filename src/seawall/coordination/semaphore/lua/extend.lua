-- Restart ARGV[1]'s holding at ARGV[2] ms if it is still live (compare-and-set on owner).
-- KEYS[1]: holdings, KEYS[2]: expiries. Reply: 1 when extended, else 0.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local expires = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not expires or tonumber(expires) <= now then
  return 0
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
local latest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], latest[2])
redis.call('PEXPIREAT', KEYS[2], latest[2])
return 1
