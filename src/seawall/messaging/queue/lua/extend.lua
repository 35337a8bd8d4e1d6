-- Move a delivery's deadline to now + ARGV[3]. ARGV: id, token, seconds, now. Returns 1/0.
local key = message_key(ARGV[1])
if redis.call('HGET', key, 't') ~= ARGV[2] then
    return 0
end
local deadline = clock(ARGV[4]) + tonumber(ARGV[3])
redis.call('ZADD', inflight_key, deadline, ARGV[1])
redis.call('HSET', key, 'a', fmt(deadline))
return 1
