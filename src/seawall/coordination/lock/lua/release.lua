-- Release a lease only if ARGV[1] still owns it (compare-and-set on the owner token).
-- KEYS[1]: the lease. Reply: 1 when released, 0 when not held by ARGV[1].
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
