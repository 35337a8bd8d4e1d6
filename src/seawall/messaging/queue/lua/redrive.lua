-- Dead letters back in line, delivery count reset. ARGV: now, "1" for the oldest ARGV[3]
-- of them or "0" for the ids that follow. Returns how many moved.
local now = clock(ARGV[1])
local moved = 0
local function revive(id, entry)
    local key = message_key(id)
    local priority = redis.call('HGET', key, 'p')
    redis.call('XDEL', dead_key, entry)
    if not priority then return end
    redis.call('HDEL', key, 'r', 'da', 'de', 'err')
    redis.call('HSET', key, 'd', 0)
    ensure_priority(priority)
    enter_line(id, priority, now)
    moved = moved + 1
end
if ARGV[2] == '1' then
    for _, entry in ipairs(redis.call('XRANGE', dead_key, '-', '+', 'COUNT', tonumber(ARGV[3]))) do
        revive(entry[2][2], entry[1])
    end
else
    for i = 3, #ARGV do
        local entry = redis.call('HGET', message_key(ARGV[i]), 'de')
        if entry then revive(ARGV[i], entry) end
    end
end
return moved
