-- Claim up to ARGV[1] ready messages for ARGV[2] seconds. ARGV: max messages, visibility
-- timeout, max deliveries, token, now, "1" to get wait hints when nothing is ready.
-- Returns {claimed, dead, [seconds until the next due message or '', stream tails]}:
-- claimed = {{id, body, headers, priority, deliveries, enqueued at}, ...} in order;
-- dead = {{id, deliveries, reason}, ...} for spent messages moved to the dead letters.
local max_messages = tonumber(ARGV[1])
local visibility = tonumber(ARGV[2])
local max_deliveries = tonumber(ARGV[3])
local token = ARGV[4]
local now = clock(ARGV[5])
local deadline = now + visibility
local deadline_text = fmt(deadline)
local claimed, dead = {}, {}

-- Delayed messages whose time has come join the line, earliest first.
local due = redis.call('ZRANGEBYSCORE', delayed_key, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1000)
if #due > 0 then
    local list = {}
    for i = 1, #due, 2 do
        list[#list + 1] = {due[i], tonumber(due[i + 1])}
    end
    table.sort(list, function(a, b)
        if a[2] ~= b[2] then return a[2] < b[2] end
        return tonumber(a[1]) < tonumber(b[1])
    end)
    for _, item in ipairs(list) do
        redis.call('ZREM', delayed_key, item[1])
        local priority = redis.call('HGET', message_key(item[1]), 'p')
        if priority then
            enter_line(item[1], priority, item[2])
        end
    end
end

-- Hand one message out: new token, deliveries + 1, hidden until the deadline.
local function stamp(id, entry, priority)
    local key = message_key(id)
    local f = redis.call('HMGET', key, 'b', 'h', 'p', 'e', 'd')
    if not f[1] then -- its data is gone: drop the orphan entry
        redis.call('XACK', stream_key(priority), GROUP, entry)
        redis.call('XDEL', stream_key(priority), entry)
        redis.call('ZREM', inflight_key, id)
        return
    end
    local deliveries = tonumber(f[5]) + 1
    redis.call('HSET', key, 'd', deliveries, 't', token, 'a', deadline_text)
    redis.call('ZADD', inflight_key, deadline, id)
    claimed[#claimed + 1] = {id, f[1], f[2] or '', tonumber(f[3]), deliveries, f[4]}
end

local function read_new(priority, count)
    local stream = stream_key(priority)
    local reply = redis.pcall('XREADGROUP', 'GROUP', GROUP, CONSUMER, 'COUNT', count,
        'STREAMS', stream, '>')
    if type(reply) == 'table' and reply.err then -- the group vanished: make it again
        redis.pcall('XGROUP', 'CREATE', stream, GROUP, '0', 'MKSTREAM')
        reply = redis.call('XREADGROUP', 'GROUP', GROUP, CONSUMER, 'COUNT', count,
            'STREAMS', stream, '>')
    end
    if not reply then
        return
    end
    for _, entry in ipairs(reply[1][2]) do
        stamp(entry[2][2], entry[1], priority)
    end
end

local prios = priorities_high_first()
for _ = 1, 3 do
    local wanted = max_messages - #claimed
    if wanted <= 0 then break end
    -- Deliveries whose visibility deadline passed are ready again, in their old place.
    local expired = redis.call('ZRANGEBYSCORE', inflight_key, '-inf', now, 'LIMIT', 0, wanted)
    local buckets = {}
    local spent = 0
    for _, id in ipairs(expired) do
        local key = message_key(id)
        local f = redis.call('HMGET', key, 'p', 'x', 'd')
        if not f[1] or not f[2] then
            redis.call('ZREM', inflight_key, id)
        elseif tonumber(f[3]) >= max_deliveries then
            local reason = 'visibility timeout expired on its last allowed delivery (' .. f[3]
                .. ' of max_deliveries=' .. ARGV[3] .. ')'
            bury(id, key, f[1], f[2], reason, now)
            dead[#dead + 1] = {id, tonumber(f[3]), reason}
            spent = spent + 1
        else
            local bucket = buckets[f[1]]
            if not bucket then
                bucket = {}
                buckets[f[1]] = bucket
            end
            bucket[#bucket + 1] = {id, f[2]}
        end
    end
    for _, priority in ipairs(prios) do
        if #claimed >= max_messages then break end
        local bucket = buckets[priority]
        if bucket then
            table.sort(bucket, function(a, b) return entry_less(a[2], b[2]) end)
            for _, item in ipairs(bucket) do
                if #claimed >= max_messages then break end
                -- Reclaim: the pending entry's delivery counter and idle time restart.
                local got = redis.call('XCLAIM', stream_key(priority), GROUP, CONSUMER, 0, item[2])
                if #got > 0 then
                    stamp(item[1], item[2], priority)
                else
                    redis.call('ZREM', inflight_key, item[1])
                end
            end
        end
        if #claimed < max_messages then
            read_new(priority, max_messages - #claimed)
        end
    end
    if spent == 0 then break end
end

if #claimed > 0 or ARGV[6] ~= '1' then
    return {claimed, dead}
end
-- Nothing ready: when does the next message come due, and where do the streams end?
local next_due = nil
local first = redis.call('ZRANGE', delayed_key, 0, 0, 'WITHSCORES')
if #first > 0 then next_due = tonumber(first[2]) end
first = redis.call('ZRANGE', inflight_key, 0, 0, 'WITHSCORES')
if #first > 0 and (next_due == nil or tonumber(first[2]) < next_due) then
    next_due = tonumber(first[2])
end
local tails = {}
for priority = 0, 9 do
    local tail = redis.call('XREVRANGE', stream_key(priority), '+', '-', 'COUNT', 1)
    tails[#tails + 1] = (#tail > 0) and tail[1][1] or '0-0'
end
local tail = redis.call('XREVRANGE', wake_key, '+', '-', 'COUNT', 1)
tails[#tails + 1] = (#tail > 0) and tail[1][1] or '0-0'
return {claimed, dead, next_due and fmt(next_due - now) or '', tails}
