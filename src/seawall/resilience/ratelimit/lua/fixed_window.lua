-- Fixed window for one key, windows aligned on Redis server time.
-- KEYS[1]  "<window end, us since the epoch> <permits granted in it>"
-- ARGV[1]  cost (permits); ARGV[2] '0' = take (reply: wait in us, 0 = granted),
--          '1' = decide (reply: {granted 1/0, remaining, wait us, reset us})
-- ARGV[3]  window (us); ARGV[4] limit (permits per window)
local cost = tonumber(ARGV[1])
local window = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = clock[1] * 1000000 + clock[2]

local window_end, granted = 0, 0
local raw = redis.call('GET', KEYS[1])
if raw then
  local stored_end, stored_granted = string.match(raw, '^(%S+) (%S+)$')
  window_end, granted = tonumber(stored_end), tonumber(stored_granted)
end
if now >= window_end then
  window_end = (math.floor(now / window) + 1) * window
  granted = 0
end
local wait = 0
if granted + cost > limit then
  wait = window_end - now
elseif cost > 0 then
  granted = granted + cost
  redis.call('SET', KEYS[1], string.format('%.17g %d', window_end, granted),
             'PX', math.max(1, math.ceil((window_end - now) / 1000)))
end

if ARGV[2] == '0' then return math.ceil(wait) end
return {wait == 0 and 1 or 0, limit - granted, math.ceil(wait),
        granted > 0 and math.ceil(window_end - now) or 0}
