-- ARGV: group, offset, token, delay, has error, error, max_deliveries, kill ('' none), now
-- Returns {'stale'}, {'requeued'} or {'dead_lettered', reason, deliveries}.
local group, offset = ARGV[1], ARGV[2]
local pending = part('p', group)
local raw = redis.call('HGET', pending, offset)
if not raw then return {'stale'} end
local entry = cjson.decode(raw)
if entry.t ~= ARGV[3] then return {'stale'} end
local now = clock(ARGV[9])
if ARGV[5] == '1' then entry.e = ARGV[6] end
local msg = message(offset)
if not msg then
  drop(group, offset, entry.k)
  return {'requeued'}
end
local max_deliveries = tonumber(ARGV[7])
if ARGV[8] ~= '' or entry.d >= max_deliveries then
  local reason = ARGV[8]
  if reason == '' then
    reason = 'negatively acknowledged on its last allowed delivery (' .. entry.d
      .. ' of max_deliveries=' .. max_deliveries .. ')'
  end
  bury(group, offset, entry, msg, reason, now)
  return {'dead_lettered', reason, entry.d}
end
entry.t = nil
redis.call('HSET', pending, offset, cjson.encode(entry))
redis.call('ZADD', part('r', group), stamp(now + tonumber(ARGV[4])), offset)
return {'requeued'}
