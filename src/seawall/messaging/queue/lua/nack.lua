-- Release a delivery. ARGV: id, token, delay, error, "1" if an error is given,
-- max deliveries, now. Returns {"requeued"}, {"dead_lettered", deliveries, reason}
-- or {"stale"}.
local id = ARGV[1]
local key = message_key(id)
local f = redis.call('HMGET', key, 't', 'p', 'x', 'd')
if not f[1] or f[1] ~= ARGV[2] then
    return {'stale'}
end
local now = clock(ARGV[7])
if ARGV[5] == '1' then
    redis.call('HSET', key, 'err', ARGV[4])
end
local deliveries = tonumber(f[4])
if deliveries >= tonumber(ARGV[6]) then
    local reason = 'negatively acknowledged on its last allowed delivery (' .. f[4]
        .. ' of max_deliveries=' .. ARGV[6] .. ')'
    bury(id, key, f[2], f[3], reason, now)
    return {'dead_lettered', deliveries, reason}
end
local delay = tonumber(ARGV[3])
redis.call('HDEL', key, 't')
if delay > 0 then
    local stream = stream_key(f[2])
    redis.call('XACK', stream, GROUP, f[3])
    redis.call('XDEL', stream, f[3])
    redis.call('HDEL', key, 'x')
    redis.call('ZREM', inflight_key, id)
    redis.call('ZADD', delayed_key, now + delay, id)
    redis.call('HSET', key, 'a', fmt(now + delay))
else
    -- Still pending in its stream, now due: the next receive reclaims it in its place.
    redis.call('ZADD', inflight_key, now, id)
    redis.call('HSET', key, 'a', fmt(now))
end
wake()
return {'requeued'}
