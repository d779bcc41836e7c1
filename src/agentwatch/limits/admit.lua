-- Check every charge of one request and take them all, or take nothing (limits/redis_store.py).
-- The arithmetic mirrors limits/window.py; the verdict is built in Python from what this returns.
--
-- KEYS: per rate window its counts hash (tick -> amount, and 'total') and its list of ticks,
--       oldest first; one sorted set per parallel key (request id -> hold deadline); then per
--       budget its state hash {spent, reserved}, its holds hash (request id -> nano-USD) and
--       its deadlines sorted set.
-- ARGV: now ('' = Redis server TIME), request id, hold seconds, window ticks, ticks per
--       second, number of rates, parallel keys and budgets; then limit, amount per rate;
--       limit per parallel key; limit, reserve, period end per budget.
-- Returns {'load', {budget indexes never loaded}} or
--         {'ok'|'refused', now, tick, per rate: total, fits, retry, reset;
--          per parallel key: in flight; per budget: spent, reserved}.

local now
if ARGV[1] == '' then
  local time = redis.call('TIME')
  now = tonumber(time[1]) + tonumber(time[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
local request_id = ARGV[2]
local hold = tonumber(ARGV[3])
local window_ticks = tonumber(ARGV[4])
local per_second = tonumber(ARGV[5])
local window = window_ticks / per_second
local n_rates, n_parallel, n_budgets = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local rate_arg, parallel_arg = 8, 8 + 2 * n_rates
local budget_arg = parallel_arg + n_parallel
local parallel_key = 2 * n_rates
local budget_key = parallel_key + n_parallel

local function fmt(x) return string.format('%.17g', x) end
-- When all of a tick is out of the window (window.leaves_at).
local function leaves_at(tick) return (tick + 1 + window_ticks) / per_second end

-- A budget counter starts from the ledger: the caller loads it and retries.
local missing = {}
for i = 1, n_budgets do
  if redis.call('HEXISTS', KEYS[budget_key + 3 * i - 2], 'spent') == 0 then
    missing[#missing + 1] = i
  end
end
if #missing > 0 then return {'load', missing} end

local tick = math.floor(now * per_second)
local reply = {'ok', fmt(now), tick}
local taken = true

for i = 1, n_rates do
  local counts, ticks = KEYS[2 * i - 1], KEYS[2 * i]
  local limit = tonumber(ARGV[rate_arg + 2 * i - 1])
  local amount = tonumber(ARGV[rate_arg + 2 * i])
  -- Drop the ticks that left the window (each once, so this is cheap on average).
  while true do
    local oldest = redis.call('LINDEX', ticks, 0)
    if not oldest or tonumber(oldest) + 1 + window_ticks > now * per_second then break end
    redis.call('LPOP', ticks)
    local gone = tonumber(redis.call('HGET', counts, oldest) or '0')
    if gone ~= 0 then redis.call('HINCRBY', counts, 'total', -gone) end
    redis.call('HDEL', counts, oldest)
  end
  local total = tonumber(redis.call('HGET', counts, 'total') or '0')
  local reset = 0
  local newest = redis.call('LINDEX', ticks, -1)
  if newest then reset = math.max(0, leaves_at(tonumber(newest)) - now) end
  local fits = total + amount <= limit
  local retry = 0
  if not fits then
    taken = false
    if amount > limit then
      retry = window
    else
      -- Walk the oldest ticks until enough would have left (window.seconds_until_fits).
      local need, freed, from, size = total + amount - limit, 0, 0, 4
      while retry == 0 do
        local chunk = redis.call('LRANGE', ticks, from, from + size - 1)
        if #chunk == 0 then break end
        local amounts = redis.call('HMGET', counts, unpack(chunk))
        for j = 1, #chunk do
          freed = freed + tonumber(amounts[j] or '0')
          if freed >= need then
            retry = math.max(0, leaves_at(tonumber(chunk[j])) - now)
            break
          end
        end
        from = from + size
        size = math.min(size * 2, 256) -- usually the first few ticks are enough
      end
    end
  end
  reply[#reply + 1] = total
  reply[#reply + 1] = fits and 1 or 0
  reply[#reply + 1] = fmt(retry)
  reply[#reply + 1] = fmt(reset)
end

for i = 1, n_parallel do
  local key = KEYS[parallel_key + i]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now)) -- holds of crashed requests
  local in_flight = redis.call('ZCARD', key)
  if in_flight >= tonumber(ARGV[parallel_arg + i]) then taken = false end
  reply[#reply + 1] = in_flight
end

for i = 1, n_budgets do
  local state = KEYS[budget_key + 3 * i - 2]
  local holds = KEYS[budget_key + 3 * i - 1]
  local deadlines = KEYS[budget_key + 3 * i]
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', deadlines, '-inf', fmt(now))) do
    local amount = redis.call('HGET', holds, id)
    if amount and amount ~= '0' then redis.call('HINCRBY', state, 'reserved', '-' .. amount) end
    redis.call('HDEL', holds, id)
    redis.call('ZREM', deadlines, id)
  end
  local spent = redis.call('HGET', state, 'spent')
  local reserved = redis.call('HGET', state, 'reserved') or '0'
  local limit = tonumber(ARGV[budget_arg + 3 * i - 2])
  local reserve = tonumber(ARGV[budget_arg + 3 * i - 1])
  if tonumber(spent) + tonumber(reserved) + reserve > limit then taken = false end
  reply[#reply + 1] = spent
  reply[#reply + 1] = reserved
end

if not taken then
  reply[1] = 'refused'
  return reply
end

local tick_field = tostring(tick)
local deadline = fmt(now + hold)
for i = 1, n_rates do
  local counts, ticks = KEYS[2 * i - 1], KEYS[2 * i]
  local amount = ARGV[rate_arg + 2 * i]
  if redis.call('HEXISTS', counts, tick_field) == 0 then redis.call('RPUSH', ticks, tick_field) end
  redis.call('HINCRBY', counts, tick_field, amount)
  redis.call('HINCRBY', counts, 'total', amount)
  local ttl = math.ceil(window) + 2
  redis.call('EXPIRE', counts, ttl)
  redis.call('EXPIRE', ticks, ttl)
end
for i = 1, n_parallel do
  redis.call('ZADD', KEYS[parallel_key + i], deadline, request_id)
  redis.call('EXPIRE', KEYS[parallel_key + i], math.ceil(hold + window))
end
for i = 1, n_budgets do
  local state = KEYS[budget_key + 3 * i - 2]
  local holds = KEYS[budget_key + 3 * i - 1]
  local deadlines = KEYS[budget_key + 3 * i]
  local reserve = ARGV[budget_arg + 3 * i - 1]
  redis.call('HINCRBY', state, 'reserved', reserve)
  redis.call('HSET', holds, request_id, reserve)
  redis.call('ZADD', deadlines, deadline, request_id)
  local ttl = math.max(1, math.ceil(tonumber(ARGV[budget_arg + 3 * i]) + 86400 - now))
  redis.call('EXPIRE', state, ttl)
  redis.call('EXPIRE', holds, ttl)
  redis.call('EXPIRE', deadlines, ttl)
end
return reply
