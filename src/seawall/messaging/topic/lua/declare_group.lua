-- ARGV: group, start ('earliest', 'latest' or an offset), create ('1'/'0')
local group = ARGV[1]
if redis.call('SISMEMBER', prefix .. 'groups', group) == 1 then return 1 end
if ARGV[3] ~= '1' then return 0 end
local id = '0'
if ARGV[2] == 'latest' then
  id = last_offset() .. '-0'
elseif ARGV[2] ~= 'earliest' and tonumber(ARGV[2]) > 1 then
  id = (tonumber(ARGV[2]) - 1) .. '-0'
end
if id == '0-0' then id = '0' end
redis.call('XGROUP', 'CREATE', stream, group, id, 'MKSTREAM')
redis.call('SADD', prefix .. 'groups', group)
return 1
