-- ARGV: group, offset, token. Returns 1, or 0 when the receipt is stale.
local group, offset = ARGV[1], ARGV[2]
local raw = redis.call('HGET', part('p', group), offset)
if not raw then return 0 end
local entry = cjson.decode(raw)
if entry.t ~= ARGV[3] then return 0 end
drop(group, offset, entry.k)
return 1
