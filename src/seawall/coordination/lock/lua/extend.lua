-- Restart a lease at ARGV[2] milliseconds only if ARGV[1] still owns it.
-- KEYS[1]: the lease. Reply: 1 when extended, 0 when not held by ARGV[1].
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
