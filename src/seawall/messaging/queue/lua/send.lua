-- Store messages. ARGV: now, dedup window, then per message: body, headers, priority,
-- delay, dedup id ('' for none). Returns {id, 1 if deduplicated else 0, ...}.
local now = clock(ARGV[1])
local window = tonumber(ARGV[2])
local result = {}
local waiting = false
for i = 3, #ARGV, 5 do
    local body, headers, priority = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local delay, dedup = tonumber(ARGV[i + 3]), ARGV[i + 4]
    local duplicate_of = nil
    local dedup_key = nil
    if dedup ~= '' then
        dedup_key = prefix .. 'dedup:' .. dedup
        local seen = redis.call('GET', dedup_key)
        if seen then
            local split = string.find(seen, ':', 1, true)
            if tonumber(string.sub(seen, split + 1)) > now then
                duplicate_of = string.sub(seen, 1, split - 1)
            end
        end
    end
    if duplicate_of then
        result[#result + 1] = duplicate_of
        result[#result + 1] = 1
    else
        local id = string.format('%d', redis.call('INCR', prefix .. 'ids'))
        local key = message_key(id)
        ensure_priority(priority)
        if delay > 0 then
            local due = now + delay
            redis.call('ZADD', delayed_key, due, id)
            redis.call('HSET', key, 'b', body, 'p', priority, 'e', fmt(now), 'a', fmt(due), 'd', 0)
            waiting = true
        else
            local entry = redis.call('XADD', stream_key(priority), '*', 'i', id)
            redis.call('HSET', key, 'b', body, 'p', priority, 'e', fmt(now), 'a', fmt(now),
                'd', 0, 'x', entry)
        end
        if headers ~= '' then
            redis.call('HSET', key, 'h', headers)
        end
        if dedup_key then
            redis.call('SET', dedup_key, id .. ':' .. fmt(now + window),
                'PX', math.ceil(window * 1000))
        end
        result[#result + 1] = id
        result[#result + 1] = 0
    end
end
if waiting then
    wake() -- an idle receive recomputes when to look again
end
return result
