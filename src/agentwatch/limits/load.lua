-- Start a budget counter from the ledger's total unless a replica already did (SET NX).
-- KEYS: the budget's state hash. ARGV: spent nano-USD, period end, now ('' = server TIME).
local now
if ARGV[3] == '' then
  local time = redis.call('TIME')
  now = tonumber(time[1]) + tonumber(time[2]) / 1000000
else
  now = tonumber(ARGV[3])
end
if redis.call('HSETNX', KEYS[1], 'spent', ARGV[1]) == 1 then
  redis.call('HSETNX', KEYS[1], 'reserved', '0')
  redis.call('EXPIRE', KEYS[1], math.max(1, math.ceil(tonumber(ARGV[2]) + 86400 - now)))
  return 1
end
return 0
