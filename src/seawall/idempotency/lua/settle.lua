-- Complete, release or extend a claim held by a token.
-- KEYS[1]: the record; ARGV: action ('complete' | 'release' | 'extend'), token,
--          seconds (ttl for complete, lease for extend), response, now ('' = Redis TIME)
-- Returns 1 if the token held the in-flight key, else 0.
local r = redis.call('HMGET', KEYS[1], 's', 't')
if r[1] ~= '0' or r[2] ~= ARGV[2] then
  return 0
end
local now = tonumber(ARGV[5])
if now == nil then
  local time = redis.call('TIME')
  now = tonumber(time[1]) + tonumber(time[2]) / 1000000
end
local action = ARGV[1]
if action == 'release' then
  redis.call('DEL', KEYS[1])
elseif action == 'complete' then
  redis.call('HSET', KEYS[1], 's', '1', 'r', ARGV[4],
    'e', string.format('%.6f', now + tonumber(ARGV[3])))
  redis.call('HDEL', KEYS[1], 'l')
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000))
else
  redis.call('HSET', KEYS[1], 'l', string.format('%.6f', now + tonumber(ARGV[3])))
end
return 1
