-- GCRA (leaky bucket as a meter) for one key, on Redis server time.
-- KEYS[1]  the key's theoretical arrival time, microseconds since the epoch
-- ARGV[1]  cost (permits); ARGV[2] '0' = take (reply: wait in us, 0 = granted),
--          '1' = decide (reply: {granted 1/0, remaining, wait us, reset us})
-- ARGV[3]  emission interval (us per permit); ARGV[4] burst (permits)
local cost = tonumber(ARGV[1])
local interval = tonumber(ARGV[3])
local tolerance = tonumber(ARGV[4]) * interval
local clock = redis.call('TIME')
local now = clock[1] * 1000000 + clock[2]

-- the debt (arrival - now) is exact, so a fresh or idle key compares exactly
local held = (tonumber(redis.call('GET', KEYS[1])) or now) - now
if held < 0 then held = 0 end
local debt = held + cost * interval
local wait = 0
if debt > tolerance + math.max(1e-9 * interval, 1) then
  wait = debt - tolerance
elseif cost > 0 then
  held = debt
  redis.call('SET', KEYS[1], string.format('%.17g', now + debt),
             'PX', math.max(1, math.ceil(debt / 1000)))
end

if ARGV[2] == '0' then return math.ceil(wait) end
return {wait == 0 and 1 or 0, math.floor((tolerance - held) / interval + 1e-9),
        math.ceil(wait), math.ceil(held)}
