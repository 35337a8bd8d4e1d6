-- Token bucket for one key, on Redis server time.
-- KEYS[1]  "<tokens> <computed at, us since the epoch>"
-- ARGV[1]  cost (permits); ARGV[2] '0' = take (reply: wait in us, 0 = granted),
--          '1' = decide (reply: {granted 1/0, remaining, wait us, reset us})
-- ARGV[3]  refill (tokens per us); ARGV[4] capacity (tokens)
local cost = tonumber(ARGV[1])
local refill = tonumber(ARGV[3])
local capacity = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = clock[1] * 1000000 + clock[2]

local tokens = capacity
local raw = redis.call('GET', KEYS[1])
if raw then
  local stored, computed_at = string.match(raw, '^(%S+) (%S+)$')
  computed_at = tonumber(computed_at)
  if computed_at > now then now = computed_at end
  tokens = math.min(capacity, tonumber(stored) + (now - computed_at) * refill)
end
local wait = 0
if tokens < cost - 1e-9 then
  wait = (cost - tokens) / refill
elseif cost > 0 then
  tokens = tokens - cost
  redis.call('SET', KEYS[1], string.format('%.17g %.17g', tokens, now),
             'PX', math.max(1, math.ceil((capacity - tokens) / refill / 1000)))
end

if ARGV[2] == '0' then return math.ceil(wait) end
return {wait == 0 and 1 or 0, math.floor(tokens + 1e-9), math.ceil(wait),
        math.ceil((capacity - tokens) / refill)}
