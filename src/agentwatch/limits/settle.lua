-- Settle one admitted request (limits/redis_store.py).
-- KEYS: the counts hash of each tokens window it was charged (tick -> amount, 'total'), its
--       parallel sorted sets, then three keys per budget: state hash, holds hash, deadlines
--       sorted set (as in admit.lua).
-- ARGV: request id, the tick it was charged in, actual cost ('' when unknown), number of
--       tokens windows, parallel keys and budgets; then per tokens window the correction
--       (actual - estimate, 0 when unknown); then per budget the reserve it held.

local request_id, tick, cost = ARGV[1], ARGV[2], ARGV[3]
local n_tokens, n_parallel, n_budgets = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])

for i = 1, n_tokens do
  -- Only a tick still in the window is corrected (not below zero); one that left stays gone.
  local delta = tonumber(ARGV[6 + i])
  local old = redis.call('HGET', KEYS[i], tick)
  if delta ~= 0 and old then
    local new = math.max(0, tonumber(old) + delta)
    if new ~= tonumber(old) then
      redis.call('HSET', KEYS[i], tick, new)
      redis.call('HINCRBY', KEYS[i], 'total', new - tonumber(old))
    end
  end
end

for i = 1, n_parallel do
  redis.call('ZREM', KEYS[n_tokens + i], request_id)
end

local first = n_tokens + n_parallel
for i = 1, n_budgets do
  local state = KEYS[first + 3 * i - 2]
  local holds = KEYS[first + 3 * i - 1]
  local deadlines = KEYS[first + 3 * i]
  -- A counter that is gone is not recreated from zero: the next admit reloads it from the
  -- ledger, which will hold this call's usage record.
  if redis.call('HEXISTS', state, 'spent') == 1 then
    local amount = redis.call('HGET', holds, request_id)
    if amount then
      if amount ~= '0' then redis.call('HINCRBY', state, 'reserved', '-' .. amount) end
      redis.call('HDEL', holds, request_id)
    end
    redis.call('ZREM', deadlines, request_id)
    -- Unknown cost: the estimate counts as spent (may over-count, never under).
    local spent = cost
    if spent == '' then spent = ARGV[6 + n_tokens + i] end
    if spent ~= '0' then redis.call('HINCRBY', state, 'spent', spent) end
  end
end
return 1
