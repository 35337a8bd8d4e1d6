-- The live holdings and the counter. KEYS[1]: holdings, KEYS[2]: expiries, KEYS[3]: counter.
-- Reply: {counter, owner, "token:slot:exclusive", ms left, owner, ...}.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local reply = {tonumber(redis.call('GET', KEYS[3]) or '0')}
local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf', 'WITHSCORES')
for index = 1, #live, 2 do
  local value = redis.call('HGET', KEYS[1], live[index])
  if value then
    table.insert(reply, live[index])
    table.insert(reply, value)
    table.insert(reply, tonumber(live[index + 1]) - now)
  end
end
return reply
