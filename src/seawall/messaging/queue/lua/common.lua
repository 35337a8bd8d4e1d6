-- Shared by every queue script (prepended to each). KEYS[1] is the queue's key prefix
-- "seawall:q:{<name>}:"; every key of a queue shares the {<name>} hash tag.
--   s<p>       stream of priority p (0-9), consumer group "seawall": entries {i = message id}
--   m:<id>     hash: b body, h headers (JSON), p priority, e enqueued at, a available at,
--              d deliveries, t token of the current delivery, x stream entry, err last error,
--              and once dead: r reason, da dead at, de entry in the dead stream
--   inflight   zset: delivered messages (all in a stream's pending list) by deadline
--   delayed    zset: messages waiting for a send or nack delay, by due time
--   prios      set: priorities in use (each has its stream and group)
--   dead       stream: dead letters in the order they died
--   wake       stream (one entry): touched when a waiting receive should look again
--   ids        counter of message ids; dedup:<id> "<message id>:<expires at>" with a TTL
-- Times are epoch seconds from Redis TIME, or the caller's clock in tests (ARGV "now").
local prefix = KEYS[1]
local GROUP = 'seawall'
local CONSUMER = 'seawall'
local inflight_key = prefix .. 'inflight'
local delayed_key = prefix .. 'delayed'
local dead_key = prefix .. 'dead'
local prios_key = prefix .. 'prios'
local wake_key = prefix .. 'wake'

local function message_key(id)
    return prefix .. 'm:' .. id
end

local function stream_key(priority)
    return prefix .. 's' .. priority
end

local function clock(given)
    if given ~= nil and given ~= '' then
        return tonumber(given)
    end
    local now = redis.call('TIME')
    return tonumber(now[1]) + tonumber(now[2]) / 1000000
end

local function fmt(seconds)
    return string.format('%.6f', seconds)
end

local function wake()
    redis.call('XADD', wake_key, 'MAXLEN', '1', '*', 'w', '1')
end

-- A priority seen for the first time gets its stream and consumer group.
local function ensure_priority(priority)
    if redis.call('SADD', prios_key, priority) == 1 then
        redis.pcall('XGROUP', 'CREATE', stream_key(priority), GROUP, '0', 'MKSTREAM')
    end
end

local function priorities_high_first()
    local prios = redis.call('SMEMBERS', prios_key)
    table.sort(prios, function(a, b) return tonumber(a) > tonumber(b) end)
    return prios
end

-- Stream entry ids "<ms>-<seq>" in stream order.
local function entry_less(a, b)
    local a_ms, a_seq = string.match(a, '(%d+)-(%d+)')
    local b_ms, b_seq = string.match(b, '(%d+)-(%d+)')
    a_ms, b_ms = tonumber(a_ms), tonumber(b_ms)
    if a_ms ~= b_ms then
        return a_ms < b_ms
    end
    return tonumber(a_seq) < tonumber(b_seq)
end

-- Ready now: the message takes its place at the back of its priority's stream.
local function enter_line(id, priority, available)
    local entry = redis.call('XADD', stream_key(priority), '*', 'i', id)
    redis.call('HSET', message_key(id), 'x', entry, 'a', fmt(available))
    return entry
end

-- Move a message to the dead letters (out of its stream, pending list and zsets).
local function bury(id, key, priority, entry, reason, now)
    if entry then
        local stream = stream_key(priority)
        redis.call('XACK', stream, GROUP, entry)
        redis.call('XDEL', stream, entry)
    end
    redis.call('ZREM', inflight_key, id)
    redis.call('ZREM', delayed_key, id)
    redis.call('HDEL', key, 't', 'x')
    local dead_entry = redis.call('XADD', dead_key, '*', 'i', id)
    redis.call('HSET', key, 'r', reason, 'da', fmt(now), 'de', dead_entry)
end

