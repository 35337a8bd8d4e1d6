-- Sliding window counter for one key, windows aligned on Redis server time.
-- KEYS[1]  "<window end, us since the epoch> <previous window's count> <current count>"
-- ARGV[1]  cost (permits); ARGV[2] '0' = take (reply: wait in us, 0 = granted),
--          '1' = decide (reply: {granted 1/0, remaining, wait us, reset us})
-- ARGV[3]  window (us); ARGV[4] limit (permits per window)
local cost = tonumber(ARGV[1])
local window = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = clock[1] * 1000000 + clock[2]

local window_end, previous, current = 0, 0, 0
local raw = redis.call('GET', KEYS[1])
if raw then
  local e, p, c = string.match(raw, '^(%S+) (%S+) (%S+)$')
  window_end, previous, current = tonumber(e), tonumber(p), tonumber(c)
end
if now >= window_end then
  local new_end = (math.floor(now / window) + 1) * window
  if new_end - window_end < 1.5 * window then previous = current else previous = 0 end
  current = 0
  window_end = new_end
end
local left = window_end - now
local wait = 0
if previous * left / window + current + cost > limit + 1e-9 then
  if current + cost <= limit then
    wait = left - window * (limit - current - cost) / previous
  else
    wait = left + window - window * (limit - cost) / current
  end
  if wait <= 0 then wait = 1 end
elseif cost > 0 then
  current = current + cost
  redis.call('SET', KEYS[1], string.format('%.17g %d %d', window_end, previous, current),
             'PX', math.max(1, math.ceil((left + window) / 1000)))
end

if ARGV[2] == '0' then return math.ceil(wait) end
local remaining = math.floor(limit - (previous * left / window + current) + 1e-9)
if remaining < 0 then remaining = 0 end
local reset = 0
if current > 0 then reset = left + window elseif previous > 0 then reset = left end
return {wait == 0 and 1 or 0, remaining, math.ceil(wait), math.ceil(reset)}
