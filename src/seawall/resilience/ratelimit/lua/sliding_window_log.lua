-- Sliding window log for one key, on Redis server time.
-- KEYS[1]  sorted set of grants: score = when the grant leaves the window (us since the
--          epoch), member = "<granted at>:<total after>:<cost>"
-- KEYS[2]  permits granted in the window (the sum of the log's costs)
-- ARGV[1]  cost (permits); ARGV[2] '0' = take (reply: wait in us, 0 = granted),
--          '1' = decide (reply: {granted 1/0, remaining, wait us, reset us})
-- ARGV[3]  window (us); ARGV[4] limit (permits per window)
local cost = tonumber(ARGV[1])
local window = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = clock[1] * 1000000 + clock[2]

local granted = tonumber(redis.call('GET', KEYS[2])) or 0
if granted > 0 then
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
  if #gone > 0 then
    for i = 1, #gone do
      granted = granted - tonumber(string.match(gone[i], ':(%d+)$'))
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
    if granted > 0 then
      redis.call('SET', KEYS[2], granted, 'KEEPTTL')
    else
      redis.call('DEL', KEYS[2])
    end
  end
end

local wait = 0
if granted + cost > limit then
  local excess = granted + cost - limit
  local start = 0
  while wait == 0 do
    local batch = redis.call('ZRANGE', KEYS[1], start, start + 99, 'WITHSCORES')
    if #batch == 0 then wait = window break end
    for i = 1, #batch, 2 do
      excess = excess - tonumber(string.match(batch[i], ':(%d+)$'))
      if excess <= 0 then
        wait = tonumber(batch[i + 1]) - now
        break
      end
    end
    start = start + 100
  end
elseif cost > 0 then
  granted = granted + cost
  redis.call('ZADD', KEYS[1], now + window, string.format('%.17g:%d:%d', now, granted, cost))
  local ttl = math.ceil(window / 1000)
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('SET', KEYS[2], granted, 'PX', ttl)
end

if ARGV[2] == '0' then return math.ceil(wait) end
local reset = 0
if granted > 0 then
  local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if #newest > 0 then reset = tonumber(newest[2]) - now end
end
return {wait == 0 and 1 or 0, limit - granted, math.ceil(wait), math.ceil(reset)}
