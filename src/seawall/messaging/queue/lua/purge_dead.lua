-- Delete up to ARGV[1] dead letters, oldest first; returns how many.
local entries = redis.call('XRANGE', dead_key, '-', '+', 'COUNT', tonumber(ARGV[1]))
local entry_ids = {}
for _, entry in ipairs(entries) do
    entry_ids[#entry_ids + 1] = entry[1]
    redis.call('DEL', message_key(entry[2][2]))
end
if #entry_ids > 0 then
    redis.call('XDEL', dead_key, unpack(entry_ids))
end
return #entry_ids
