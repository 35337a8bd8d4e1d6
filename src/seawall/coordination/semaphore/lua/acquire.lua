-- Grant a semaphore holding when there is room, on Redis time, atomically.
-- KEYS[1]: holdings (hash owner -> "token:slot:exclusive"), KEYS[2]: expiries (zset owner
-- -> ms), KEYS[3]: exclusive waiters' intents (zset owner -> ms), KEYS[4]: fencing counter.
-- ARGV: owner, ttl ms, limit, exclusive ("1"/"0"), intent ttl ms.
-- Reply: {token, slot, hint ms}; token 0 when refused, hint -1 when unknown.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local owner = ARGV[1]
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, gone in ipairs(expired) do
  redis.call('ZREM', KEYS[2], gone)
  redis.call('HDEL', KEYS[1], gone)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local exclusive = ARGV[4]
local slot
local mine = redis.call('HGET', KEYS[1], owner)
if mine then
  local _, _, held_slot, held_exclusive = string.find(mine, '^%d+:(%d+):(%d)$')
  slot = tonumber(held_slot)
  exclusive = held_exclusive
else
  local holdings = redis.call('HVALS', KEYS[1])
  if exclusive == '1' then
    if #holdings > 0 then
      local intent_ttl = tonumber(ARGV[5])
      if intent_ttl > 0 then
        redis.call('ZADD', KEYS[3], now + intent_ttl, owner)
        local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
        redis.call('PEXPIREAT', KEYS[3], last[2])
      end
      local latest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
      return {0, -1, math.max(0, tonumber(latest[2]) - now)}
    end
    slot = 0
  else
    local used = {}
    local any_exclusive = false
    for _, value in ipairs(holdings) do
      local _, _, held_slot, held_exclusive = string.find(value, '^%d+:(%d+):(%d)$')
      used[tonumber(held_slot)] = true
      if held_exclusive == '1' then
        any_exclusive = true
      end
    end
    if #holdings >= tonumber(ARGV[3]) or any_exclusive then
      local soonest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
      return {0, -1, math.max(0, tonumber(soonest[2]) - now)}
    end
    for _, waiter in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
      if waiter ~= owner then
        return {0, -1, -1}
      end
    end
    slot = 0
    while used[slot] do
      slot = slot + 1
    end
  end
end
local token = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], owner, token .. ':' .. slot .. ':' .. exclusive)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), owner)
redis.call('ZREM', KEYS[3], owner)
local latest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], latest[2])
redis.call('PEXPIREAT', KEYS[2], latest[2])
return {token, slot, 0}
