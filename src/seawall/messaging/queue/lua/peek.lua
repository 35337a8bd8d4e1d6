-- The next ARGV[1] ready messages in receive order, unclaimed. ARGV: limit, now.
-- Returns {{id, body, headers, priority, deliveries, enqueued at, available at, {error}}}.
local limit = tonumber(ARGV[1])
local now = clock(ARGV[2])
local expired, due = {}, {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', inflight_key, '-inf', now, 'LIMIT', 0, 10000)) do
    local f = redis.call('HMGET', message_key(id), 'p', 'x')
    if f[1] and f[2] then
        expired[f[1]] = expired[f[1]] or {}
        table.insert(expired[f[1]], {id, f[2]})
    end
end
local ready = redis.call('ZRANGEBYSCORE', delayed_key, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 10000)
for i = 1, #ready, 2 do
    local priority = redis.call('HGET', message_key(ready[i]), 'p')
    if priority then
        due[priority] = due[priority] or {}
        table.insert(due[priority], {ready[i], tonumber(ready[i + 1])})
    end
end
local ids = {}
for _, priority in ipairs(priorities_high_first()) do
    if #ids >= limit then break end
    local bucket = expired[priority]
    if bucket then
        table.sort(bucket, function(a, b) return entry_less(a[2], b[2]) end)
        for _, item in ipairs(bucket) do ids[#ids + 1] = item[1] end
    end
    local stream = stream_key(priority)
    local last = '0-0'
    local groups = redis.pcall('XINFO', 'GROUPS', stream)
    if type(groups) == 'table' and not groups.err then
        for _, group in ipairs(groups) do
            local fields = {}
            for i = 1, #group, 2 do fields[group[i]] = group[i + 1] end
            if fields['name'] == GROUP then last = fields['last-delivered-id'] end
        end
    end
    if #ids < limit then
        local fresh = redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', limit - #ids)
        for _, entry in ipairs(fresh) do
            ids[#ids + 1] = entry[2][2]
        end
    end
    bucket = due[priority]
    if bucket then
        table.sort(bucket, function(a, b)
            if a[2] ~= b[2] then return a[2] < b[2] end
            return tonumber(a[1]) < tonumber(b[1])
        end)
        for _, item in ipairs(bucket) do ids[#ids + 1] = item[1] end
    end
end
local result = {}
for i = 1, math.min(limit, #ids) do
    local f = redis.call('HMGET', message_key(ids[i]), 'b', 'h', 'p', 'd', 'e', 'a', 'err')
    if f[1] then
        result[#result + 1] = {ids[i], f[1], f[2] or '', tonumber(f[3]), tonumber(f[4]), f[5],
            f[6], f[7] and {f[7]} or {}}
    end
end
return result
