-- Counts per state. ARGV: now. Returns {ready, in flight, delayed, dead}.
local now = clock(ARGV[1])
local stored = 0
for _, priority in ipairs(redis.call('SMEMBERS', prios_key)) do
    stored = stored + redis.call('XLEN', stream_key(priority))
end
local delivered = redis.call('ZCARD', inflight_key)
local expired = redis.call('ZCOUNT', inflight_key, '-inf', now)
local waiting = redis.call('ZCARD', delayed_key)
local due = redis.call('ZCOUNT', delayed_key, '-inf', now)
return {stored - delivered + expired + due, delivered - expired, waiting - due,
    redis.call('XLEN', dead_key)}
