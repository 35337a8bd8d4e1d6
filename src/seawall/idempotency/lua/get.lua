-- Read a record unless expired, or delete it when expired and ARGV[2] == 'purge'.
-- KEYS[1]: the record; ARGV: now ('' = Redis TIME), mode ('get' | 'purge')
-- Returns {f, s, t, r, c, l, e} (get) or 1/0 (purge: deleted or not); {} when absent/expired.
local now = tonumber(ARGV[1])
if now == nil then
  local time = redis.call('TIME')
  now = tonumber(time[1]) + tonumber(time[2]) / 1000000
end
local r = redis.call('HMGET', KEYS[1], 'f', 's', 't', 'r', 'c', 'l', 'e')
if ARGV[2] == 'purge' then
  if r[7] and tonumber(r[7]) <= now then
    redis.call('DEL', KEYS[1])
    return 1
  end
  return 0
end
if (not r[1]) or tonumber(r[7]) <= now then
  return {}
end
return r
