-- ARGV: group, wanted, visibility, max_deliveries, token, now, keep, age, max_pending, trim
-- Returns {1, next due score or false, last offset, dead {{offset, reason, deliveries}},
--          claimed {{offset, key or false, body, headers or false, published_at, deliveries}}}
-- or {-1} when the group does not exist.
local group = ARGV[1]
local wanted = tonumber(ARGV[2])
local visibility = tonumber(ARGV[3])
local max_deliveries = tonumber(ARGV[4])
local token = ARGV[5]
local now = clock(ARGV[6])
local max_pending = tonumber(ARGV[9])
if redis.call('SISMEMBER', prefix .. 'groups', group) == 0 then return {-1} end
if ARGV[10] == '1' then trim(now, ARGV[7], ARGV[8]) end
local pending = part('p', group)
local ready = part('r', group)
local deadline = stamp(now + visibility)
local claimed = {}
local dead = {}

local again = true
while again and #claimed < wanted do
  again = false
  local due = redis.call('ZRANGEBYSCORE', ready, '-inf', stamp(now), 'LIMIT', 0, wanted - #claimed)
  for _, offset in ipairs(due) do
    local entry = cjson.decode(redis.call('HGET', pending, offset))
    local msg = message(offset)
    if not msg then
      drop(group, offset, entry.k)
      again = true
    elseif entry.d >= max_deliveries then
      local reason = 'visibility timeout expired on its last allowed delivery (' .. entry.d
        .. ' of max_deliveries=' .. max_deliveries .. ')'
      bury(group, offset, entry, msg, reason, now)
      dead[#dead + 1] = {offset, reason, entry.d}
      again = true
    else
      entry.d = entry.d + 1
      entry.t = token
      redis.call('HSET', pending, offset, cjson.encode(entry))
      redis.call('ZADD', ready, deadline, offset)
      claimed[#claimed + 1] = {offset, msg.k or false, msg.b, msg.h or false, msg.t, entry.d}
    end
  end
end

while #claimed < wanted do
  local room = max_pending - redis.call('HLEN', pending)
  if room <= 0 then break end
  local asked = math.min(wanted - #claimed, room)
  local read = redis.call('XREADGROUP', 'GROUP', group, 'seawall', 'COUNT', asked,
    'STREAMS', stream, '>')
  if not read then break end
  local entries = read[1][2]
  for _, item in ipairs(entries) do
    local offset = offset_of(item[1])
    local msg = fields(item[2])
    local entry = {d = 0}
    local blocked = false
    if msg.k then
      entry.k = msg.k
      blocked = redis.call('RPUSH', line_of(group, msg.k), offset) > 1
      redis.call('SADD', part('lk', group), msg.k)
    end
    if not blocked then
      entry.d = 1
      entry.t = token
      redis.call('ZADD', ready, deadline, offset)
      claimed[#claimed + 1] = {offset, msg.k or false, msg.b, msg.h or false, msg.t, 1}
    end
    redis.call('HSET', pending, offset, cjson.encode(entry))
  end
  if #entries < asked then break end
end

local next_due = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
return {1, next_due[2] or false, last_offset(), dead, claimed}
