-- Delete up to ARGV[1] live messages (ready, in flight, delayed); returns how many.
local chunk = tonumber(ARGV[1])
local removed = 0
for _, priority in ipairs(redis.call('SMEMBERS', prios_key)) do
    if removed >= chunk then break end
    local stream = stream_key(priority)
    local entries = redis.call('XRANGE', stream, '-', '+', 'COUNT', chunk - removed)
    if #entries > 0 then
        local entry_ids = {}
        for _, entry in ipairs(entries) do
            entry_ids[#entry_ids + 1] = entry[1]
            local id = entry[2][2]
            redis.call('DEL', message_key(id))
            redis.call('ZREM', inflight_key, id)
        end
        redis.call('XACK', stream, GROUP, unpack(entry_ids))
        redis.call('XDEL', stream, unpack(entry_ids))
        removed = removed + #entries
    end
end
if removed < chunk then
    for _, id in ipairs(redis.call('ZRANGE', delayed_key, 0, chunk - removed - 1)) do
        redis.call('DEL', message_key(id))
        redis.call('ZREM', delayed_key, id)
        removed = removed + 1
    end
end
return removed
