-- Move a held message to the dead letters. ARGV: id, token, reason, now.
-- Returns its delivery count, or -1 if the receipt is stale.
local id = ARGV[1]
local key = message_key(id)
local f = redis.call('HMGET', key, 't', 'p', 'x', 'd')
if not f[1] or f[1] ~= ARGV[2] then
    return -1
end
bury(id, key, f[2], f[3], ARGV[3], clock(ARGV[4]))
return tonumber(f[4])
