-- Redlock, second step: raise this instance's fencing counter to ARGV[2] (never lower it),
-- only while ARGV[1] still owns the lease here.
-- KEYS[1]: the lease, KEYS[2]: the fencing counter. Reply: 1 when done, 0 when not held.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[2])
end
return 1
