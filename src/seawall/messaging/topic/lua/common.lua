-- Shared by every topic script (seawall.messaging.topic.redis). KEYS[1] is the topic's
-- key prefix "seawall:t:{<topic>}:" (one hash tag: one cluster slot). Layout:
--   s            the stream; entry id "<offset>-0", fields t (published_at), b (body),
--                k (key, when given), h (headers JSON, when given)
--   n            the last offset handed out (INCR)
--   groups       set of the topic's group names; each is also a stream consumer group
--   p:<g>        hash offset -> cjson {d = deliveries, t = token, k = key, e = last error}
--                of the group's pending messages
--   r:<g>        zset of ready and in-flight offsets by visible_at (blocked ones absent)
--   l:<g>:<key>  list of the group's pending offsets of one key; only the head may be out
--   lk:<g>       set of the keys that have a line
--   dl:<g>       stream of the group's dead letters
local prefix = KEYS[1]
local stream = prefix .. 's'

local function clock(value)
  if value ~= '' then return tonumber(value) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function stamp(seconds)
  return string.format('%.6f', seconds)
end

local function part(name, group)
  return prefix .. name .. ':' .. group
end

local function line_of(group, key)
  return prefix .. 'l:' .. group .. ':' .. key
end

local function fields(list)
  local t = {}
  for i = 1, #list, 2 do t[list[i]] = list[i + 1] end
  return t
end

local function message(offset)
  local found = redis.call('XRANGE', stream, offset .. '-0', offset .. '-0')
  if #found == 0 then return nil end
  return fields(found[1][2])
end

local function offset_of(id)
  return string.match(id, '^(%d+)')
end

local function last_offset()
  return tonumber(redis.call('GET', prefix .. 'n') or '0')
end

local function first_offset()
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  if #first == 0 then return last_offset() + 1 end
  return tonumber(offset_of(first[1][1]))
end

local function trim(now, keep, age)
  if keep ~= '' then redis.call('XTRIM', stream, 'MAXLEN', tonumber(keep)) end
  if age ~= '' then
    local cutoff = now - tonumber(age)
    local start = '-'
    while true do
      local batch = redis.call('XRANGE', stream, start, '+', 'COUNT', 100)
      if #batch == 0 then
        redis.call('XTRIM', stream, 'MAXLEN', 0)
        return
      end
      for i = 1, #batch do
        if tonumber(fields(batch[i][2]).t) >= cutoff then
          redis.call('XTRIM', stream, 'MINID', batch[i][1])
          return
        end
      end
      start = '(' .. batch[#batch][1]
    end
  end
end

-- Forget a pending message (acknowledged, dead or gone) and unblock its key's next one.
local function drop(group, offset, key)
  redis.call('HDEL', part('p', group), offset)
  redis.call('ZREM', part('r', group), offset)
  redis.call('XACK', stream, group, offset .. '-0')
  if key then
    local line = line_of(group, key)
    redis.call('LREM', line, 1, offset)
    local head = redis.call('LINDEX', line, 0)
    if head then
      redis.call('ZADD', part('r', group), 'NX', 0, head)
    else
      redis.call('SREM', part('lk', group), key)
    end
  end
end

local function bury(group, offset, entry, msg, reason, now)
  redis.call('XADD', part('dl', group), '*', 'o', offset, 'k', entry.k or '',
    'hk', entry.k and '1' or '0', 'b', msg.b, 'h', msg.h or '', 't', msg.t,
    'd', entry.d, 'at', stamp(now), 'r', reason, 'e', entry.e or '', 'he', entry.e and '1' or '0')
  drop(group, offset, entry.k)
end

local function restart(group, offset)
  for _, key in ipairs(redis.call('SMEMBERS', part('lk', group))) do
    redis.call('DEL', line_of(group, key))
  end
  redis.call('DEL', part('p', group), part('r', group), part('lk', group))
  redis.call('XGROUP', 'DESTROY', stream, group)
  local id = '0'
  if offset > 1 then id = (offset - 1) .. '-0' end
  redis.call('XGROUP', 'CREATE', stream, group, id, 'MKSTREAM')
end
