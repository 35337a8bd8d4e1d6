-- seawall shared circuit breaker: one script, one round trip per operation.
--
-- KEYS[1] state hash, KEYS[2] window list (newest entry first)
-- ARGV: 1 operation (report | acquire | force_open | force_closed | disable | reset)
--       2 epoch the outcomes belong to   3 calls   4 failed   5 slow   6 released permits
--       7 window kind (count | time)     8 size (calls, or buckets)     9 bucket width (ms)
--      10 minimum calls  11 failure rate  12 slow-call rate (> 1 when unused)
--      13 open for (ms)  14 backoff factor  15 max open for (ms)  16 half-open calls
--      17 breaker name   18 change channel  19 key ttl (ms)
-- Publishes "state TAB epoch TAB remaining ms TAB trips TAB reason TAB name" on a change.
-- Returns {granted, state, epoch, remaining ms, calls, failed, slow, trips, reason}; the window
-- totals are strings (a count window counts its oldest batch pro rata).
-- Time is the server's (TIME), never a client's.

local op = ARGV[1]
local epoch_in = tonumber(ARGV[2])
local calls_in, failed_in, slow_in = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local released = tonumber(ARGV[6])
local kind, size, bucket_ms = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local minimum, failure_rate, slow_rate = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local open_ms, backoff, max_open_ms = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])
local trial_calls = tonumber(ARGV[16])
local name, channel, ttl = ARGV[17], ARGV[18], tonumber(ARGV[19])
local state_key, window_key = KEYS[1], KEYS[2]

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local h = redis.call('HMGET', state_key,
  'st', 'ep', 'until', 'ct', 'tt', 'wc', 'wf', 'ws', 'tc', 'tf', 'ts', 'tg', 'hs')
local st = h[1]
local ep, open_until, consecutive, trips
local wc, wf, ws, tc, tf, ts, tg, half_since
if not st then
  -- A new breaker. Its epoch starts at the server's time in microseconds, so a breaker
  -- whose keys expired and were recreated still has a larger epoch than any mirror.
  st = 'closed'
  ep = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
  open_until, consecutive, trips = 0, 0, 0
  wc, wf, ws, tc, tf, ts, tg, half_since = 0, 0, 0, 0, 0, 0, 0, 0
else
  ep, open_until = tonumber(h[2]), tonumber(h[3])
  consecutive, trips = tonumber(h[4]), tonumber(h[5])
  wc, wf, ws = tonumber(h[6]), tonumber(h[7]), tonumber(h[8])
  tc, tf, ts, tg = tonumber(h[9]), tonumber(h[10]), tonumber(h[11]), tonumber(h[12])
  half_since = tonumber(h[13])
end
local changed = false
local reason = ''

local function enter(new_state, why)
  st = new_state
  reason = why
  ep = ep + 1
  changed = true
  if new_state == 'closed' then
    redis.call('DEL', window_key)
    wc, wf, ws = 0, 0, 0
  elseif new_state == 'half_open' then
    tc, tf, ts, tg = 0, 0, 0, 0
    half_since = now
  end
end

local function trip(why)
  consecutive = consecutive + 1
  trips = trips + 1
  local wait = open_ms * (backoff ^ (consecutive - 1))
  if wait > max_open_ms or wait ~= wait then wait = max_open_ms end
  open_until = now + wait
  redis.call('DEL', window_key)
  wc, wf, ws = 0, 0, 0
  enter('open', why)
end

local function parse(entry)
  local a, b, c, d = string.match(entry, '^(%S+) (%S+) (%S+) (%S+)$')
  return tonumber(a), tonumber(b), tonumber(c), tonumber(d)
end

-- Effective window totals: a count window counts its oldest batch pro rata.
local function totals()
  if kind == 'count' and wc > size then
    local _, c, f, s = parse(redis.call('LINDEX', window_key, -1))
    local keep = (c - (wc - size)) / c
    return size, wf - f * (1 - keep), ws - s * (1 - keep)
  end
  return wc, wf, ws
end

local function trim()
  if kind == 'count' then
    while true do
      local tail = redis.call('LINDEX', window_key, -1)
      if not tail then break end
      local _, c, f, s = parse(tail)
      if wc - c < size then break end
      redis.call('RPOP', window_key)
      wc, wf, ws = wc - c, wf - f, ws - s
    end
  else
    local oldest = math.floor(now / bucket_ms) - size + 1
    while true do
      local tail = redis.call('LINDEX', window_key, -1)
      if not tail then break end
      local b, c, f, s = parse(tail)
      if b >= oldest then break end
      redis.call('RPOP', window_key)
      wc, wf, ws = wc - c, wf - f, ws - s
    end
  end
end

local function merge()
  if kind == 'count' then
    redis.call('LPUSH', window_key, string.format('%d %d %d %d', now, calls_in, failed_in, slow_in))
  else
    local bucket = math.floor(now / bucket_ms)
    local head = redis.call('LINDEX', window_key, 0)
    local b, c, f, s
    if head then b, c, f, s = parse(head) end
    if head and b == bucket then
      redis.call('LSET', window_key, 0,
        string.format('%d %d %d %d', bucket, c + calls_in, f + failed_in, s + slow_in))
    else
      redis.call('LPUSH', window_key,
        string.format('%d %d %d %d', bucket, calls_in, failed_in, slow_in))
    end
  end
  wc, wf, ws = wc + calls_in, wf + failed_in, ws + slow_in
end

local function judge()
  local c, f, s = totals()
  if c >= minimum and c > 0 then
    if f / c >= failure_rate then
      trip(string.format('failure rate %.3g of %.4g calls reached %.3g', f / c, c, failure_rate))
    elseif s / c >= slow_rate then
      trip(string.format('slow-call rate %.3g of %.4g calls reached %.3g', s / c, c, slow_rate))
    end
  end
end

local function judge_trials()
  if tc < trial_calls then return end
  if tf / tc >= failure_rate then
    trip(string.format('trial failure rate %d/%d reached %.3g', tf, tc, failure_rate))
  elseif ts / tc >= slow_rate then
    trip(string.format('trial slow-call rate %d/%d reached %.3g', ts, tc, slow_rate))
  else
    consecutive = 0
    enter('closed', string.format('%d trial calls passed', tc))
  end
end

local granted = 0
if op == 'report' then
  if epoch_in == ep then
    if st == 'closed' then
      trim()
      if calls_in > 0 then
        merge()
        trim()
        judge()
      end
    elseif st == 'half_open' then
      tg = math.max(0, tg - released)
      tc, tf, ts = tc + calls_in, tf + failed_in, ts + slow_in
      judge_trials()
    end
  elseif st == 'closed' then
    trim()
  end
elseif op == 'acquire' then
  if st == 'open' and now >= open_until then enter('half_open', 'open period ended') end
  if st == 'half_open' and tg >= trial_calls and now - half_since >= open_ms then
    -- Permits granted long ago without outcomes (a crashed process): start over.
    enter('half_open', 'trial permits not reported in time, granted again')
  end
  if st == 'half_open' then
    if tg < trial_calls then
      tg = tg + 1
      granted = 1
    end
  elseif st == 'closed' or st == 'disabled' then
    granted = 1
  end
elseif op == 'force_open' then
  enter('forced_open', 'forced open')
elseif op == 'force_closed' then
  consecutive = 0
  enter('closed', 'forced closed')
elseif op == 'disable' then
  enter('disabled', 'disabled')
elseif op == 'reset' then
  consecutive, trips = 0, 0
  enter('closed', 'reset')
else
  return redis.error_reply('unknown breaker operation ' .. tostring(op))
end

redis.call('HSET', state_key,
  'st', st, 'ep', string.format('%d', ep), 'until', string.format('%d', open_until),
  'ct', consecutive, 'tt', trips, 'wc', wc, 'wf', wf, 'ws', ws,
  'tc', tc, 'tf', tf, 'ts', ts, 'tg', tg, 'hs', string.format('%d', half_since))
redis.call('PEXPIRE', state_key, ttl)
if redis.call('EXISTS', window_key) == 1 then redis.call('PEXPIRE', window_key, ttl) end

local remaining = 0
if st == 'open' then remaining = math.max(0, open_until - now) end
if changed then
  redis.call('PUBLISH', channel, table.concat({st, string.format('%d', ep),
    string.format('%d', remaining), string.format('%d', trips), reason, name}, '\t'))
end
local c, f, s = 0, 0, 0
if st == 'closed' then
  c, f, s = totals()
elseif st == 'half_open' then
  c, f, s = tc, tf, ts
end
return {granted, st, string.format('%d', ep), string.format('%d', remaining),
  tostring(c), tostring(f), tostring(s), trips, reason}
