-- replace_message: swap a stored message for its updated version (same timestamp) and move it
-- between queue states, only if it is unchanged since the caller read it.
--
-- KEYS[1]  message key                 zset  ts -> message JSON
-- KEYS[2]  size:{message key}          hash  total, inflight
-- KEYS[3]  inflight:{message key}      zset  id -> ts
-- KEYS[4]  queue:pending               zset  id -> rank
-- KEYS[5]  queue:processing            zset  id -> claimedAt
-- KEYS[6]  queue:context:{id}          string
-- KEYS[7]  store:stats                 hash
-- KEYS[8]  store:recent                zset  ts -> copy of the newest messages
-- ARGV[1]  id
-- ARGV[2]  ts
-- ARGV[3]  the message JSON as read
-- ARGV[4]  the new message JSON
-- ARGV[5]  queue move: '' | 'pending' | 'processing' | 'done' | 'drop' (id lost its message)
-- ARGV[6]  queue score for 'pending' (rank) or 'processing' (claimedAt)
-- ARGV[7]  globalScore delta
--
-- Returns 1 when replaced, 0 when the message changed or vanished since it was read.
-- Updates are never refused for size: they change bookkeeping by the exact byte delta.

local id, ts, old, new, move = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

if move == 'drop' then
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZREM', KEYS[5], id)
  redis.call('DEL', KEYS[6])
  return 1
end

local current = redis.call('ZRANGE', KEYS[1], ts, ts, 'BYSCORE')[1]
if current ~= old then return 0 end

redis.call('ZREM', KEYS[1], old)
redis.call('ZADD', KEYS[1], ts, new)
if redis.call('ZREM', KEYS[8], old) == 1 then redis.call('ZADD', KEYS[8], ts, new) end
local delta = #new - #old
if delta ~= 0 then
  redis.call('HINCRBY', KEYS[2], 'total', delta)
  redis.call('HINCRBY', KEYS[7], 'bytes', delta)
end

local in_flight = redis.call('ZSCORE', KEYS[3], id)
if move == 'done' then
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZREM', KEYS[5], id)
  redis.call('DEL', KEYS[6])
  if in_flight then
    redis.call('ZREM', KEYS[3], id)
    redis.call('HINCRBY', KEYS[2], 'inflight', -#old)
  end
else
  if move == 'pending' then
    redis.call('ZREM', KEYS[5], id)
    redis.call('ZADD', KEYS[4], ARGV[6], id)
  elseif move == 'processing' then
    redis.call('ZREM', KEYS[4], id)
    redis.call('ZADD', KEYS[5], ARGV[6], id)
  end
  if in_flight then
    if delta ~= 0 then redis.call('HINCRBY', KEYS[2], 'inflight', delta) end
  elseif move ~= '' then
    redis.call('ZADD', KEYS[3], ts, id)
    redis.call('HINCRBY', KEYS[2], 'inflight', #new)
  end
end

if ARGV[7] ~= '0' then redis.call('HINCRBY', KEYS[7], 'globalScore', ARGV[7]) end
return 1
