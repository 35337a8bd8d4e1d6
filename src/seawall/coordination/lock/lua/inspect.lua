-- The current holder: {owner, fencing token, remaining ms}, or an empty reply.
-- KEYS[1]: the lease, KEYS[2]: the fencing counter.
local owner = redis.call('GET', KEYS[1])
if not owner then
  return {}
end
return {owner, tonumber(redis.call('GET', KEYS[2]) or '0'), redis.call('PTTL', KEYS[1])}
