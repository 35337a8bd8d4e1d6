-- ARGV: now, keep, age, then per record: key ('' none), has key, body, headers ('' none)
local now = clock(ARGV[1])
local first = nil
local published_at = stamp(now)
for i = 4, #ARGV, 4 do
  local offset = redis.call('INCR', prefix .. 'n')
  if not first then first = offset end
  local entry = {'t', published_at, 'b', ARGV[i + 2]}
  if ARGV[i + 1] == '1' then
    entry[#entry + 1] = 'k'
    entry[#entry + 1] = ARGV[i]
  end
  if ARGV[i + 3] ~= '' then
    entry[#entry + 1] = 'h'
    entry[#entry + 1] = ARGV[i + 3]
  end
  redis.call('XADD', stream, offset .. '-0', unpack(entry))
end
trim(now, ARGV[2], ARGV[3])
return first
