-- Acknowledge receipts. ARGV: id, token, id, token, ... Returns the 1-based positions of
-- the stale receipts (their message was settled, or delivered again, meanwhile).
local stale = {}
for i = 1, #ARGV, 2 do
    local id = ARGV[i]
    local key = message_key(id)
    local f = redis.call('HMGET', key, 't', 'p', 'x')
    if f[1] and f[1] == ARGV[i + 1] then
        local stream = stream_key(f[2])
        redis.call('XACK', stream, GROUP, f[3])
        redis.call('XDEL', stream, f[3])
        redis.call('ZREM', inflight_key, id)
        redis.call('DEL', key)
    else
        stale[#stale + 1] = (i + 1) / 2
    end
end
return stale
