-- ARGV: group. Returns the group's lag, or -1 when the group does not exist.
local group = ARGV[1]
if redis.call('SISMEMBER', prefix .. 'groups', group) == 0 then return -1 end
local cursor = 0
for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local entry = fields(info)
  if entry.name == group then cursor = tonumber(offset_of(entry['last-delivered-id'])) end
end
local first = first_offset()
local fresh = last_offset() - math.max(cursor, first - 1)
if fresh < 0 then fresh = 0 end
local held = 0
for _, offset in ipairs(redis.call('HKEYS', part('p', group))) do
  if tonumber(offset) >= first then held = held + 1 end
end
return fresh + held
