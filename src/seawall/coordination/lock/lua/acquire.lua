-- Acquire a lease and issue its fencing token, atomically, on the server's clock.
-- KEYS[1]: the lease (value: owner token, expiry: PX ttl)
-- KEYS[2]: the fencing counter (no expiry; kept after release so tokens never repeat)
-- ARGV[1]: owner token, ARGV[2]: ttl in milliseconds
-- Reply: the fencing token (>= 1) when granted; else minus the holder's remaining
-- lease in milliseconds (0 when unknown).
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  -- the same owner again: a retry whose first reply was lost; grant it afresh
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return redis.call('INCR', KEYS[2])
end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  return 0
end
return -left
