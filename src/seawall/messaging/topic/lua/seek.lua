-- ARGV: group, offset ('' with ARGV[3] = a time: seek to the first message at or after it)
-- Returns the offset sought, or -1 when the group does not exist.
local group = ARGV[1]
if redis.call('SISMEMBER', prefix .. 'groups', group) == 0 then return -1 end
local offset = tonumber(ARGV[2])
if ARGV[2] == '' then
  local at = tonumber(ARGV[3])
  offset = last_offset() + 1
  local start = '-'
  local found = false
  while not found do
    local batch = redis.call('XRANGE', stream, start, '+', 'COUNT', 500)
    if #batch == 0 then break end
    for i = 1, #batch do
      if tonumber(fields(batch[i][2]).t) >= at then
        offset = tonumber(offset_of(batch[i][1]))
        found = true
        break
      end
    end
    start = '(' .. batch[#batch][1]
  end
end
restart(group, offset)
return offset
