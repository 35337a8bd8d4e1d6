-- Claim an idempotency key atomically.
-- KEYS[1]: the record (a hash: f fingerprint, s status, t token, r response,
--          c created_at, l locked_until, e expires_at)
-- ARGV: fingerprint, token, lease seconds, ttl seconds, now ('' = Redis TIME)
-- Returns {claimed 0/1, now, f, s, t, r, c, l, e}.
local now = tonumber(ARGV[5])
if now == nil then
  local time = redis.call('TIME')
  now = tonumber(time[1]) + tonumber(time[2]) / 1000000
end
local r = redis.call('HMGET', KEYS[1], 'f', 's', 't', 'r', 'c', 'l', 'e')
local nows = string.format('%.6f', now)
local take = (not r[1]) or (tonumber(r[7]) <= now)
  or (r[2] == '0' and r[6] and tonumber(r[6]) <= now and r[1] == ARGV[1])
if take then
  local lease_until = string.format('%.6f', now + tonumber(ARGV[3]))
  local expires = string.format('%.6f', now + tonumber(ARGV[4]))
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'f', ARGV[1], 's', '0', 't', ARGV[2], 'c', nows,
    'l', lease_until, 'e', expires)
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[4]) * 1000))
  return {1, nows, ARGV[1], '0', ARGV[2], false, nows, lease_until, expires}
end
return {0, nows, r[1], r[2], r[3], r[4], r[5], r[6], r[7]}
