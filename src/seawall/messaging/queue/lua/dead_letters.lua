-- Dead letters in the order they died. ARGV: limit, or "" and a message id for one.
-- Returns {{id, body, headers, priority, deliveries, enqueued at, dead at, reason, {error}}}.
local ids = {}
if ARGV[1] ~= '' then
    for _, entry in ipairs(redis.call('XRANGE', dead_key, '-', '+', 'COUNT', tonumber(ARGV[1]))) do
        ids[#ids + 1] = entry[2][2]
    end
else
    ids[1] = ARGV[2]
end
local result = {}
for _, id in ipairs(ids) do
    local f = redis.call('HMGET', message_key(id), 'b', 'h', 'p', 'd', 'e', 'da', 'r', 'err', 'de')
    if f[1] and f[9] then
        result[#result + 1] = {id, f[1], f[2] or '', tonumber(f[3]), tonumber(f[4]), f[5], f[6],
            f[7], f[8] and {f[8]} or {}}
    end
end
return result
