-- End ARGV[1]'s holding and withdraw its intent. KEYS[1]: holdings, KEYS[2]: expiries,
-- KEYS[3]: intents. Reply: 1 when a live holding ended, else 0.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREM', KEYS[3], ARGV[1])
local expires = redis.call('ZSCORE', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
if expires and tonumber(expires) > now then
  return 1
end
return 0
