-- claim_message: put expired claims back in line, then claim one pending message, atomically.
--
-- KEYS[1]  pending      pending:{p}      zset  id -> rank
-- KEYS[2]  processing   processing:{p}   zset  id -> claimedAt
-- KEYS[3]  claims       claims:{p}       hash  id -> token of the current claim
-- KEYS[4]  contexts     contexts:{p}     hash  id -> context JSON
-- KEYS[5]  ids          ids:{p}          hash  id -> location record
-- KEYS[6]  feed         feed:{p}         zset  copies of the newest messages
-- KEYS[7]  sizes        sizes:{p}        hash  message key -> size record
-- KEYS[8]  meta         meta:{p}         hash  counters (bytes)
--
-- ARGV: mode ('next' = the head of the queue, 'id' = target, 'requeue' = only put expired claims
-- back), target, worker (JSON string), token, timeout_ms, requeue_max (expired claims put back
-- per call), stride (queue rank per priority step)
--
-- Returns {'ok', message JSON, context or false, pending, processing}   (counts after the claim)
--       | {'empty', pending, processing}                         nothing pending here
--       | {'not_found'} | {'not_queued'} | {'not_pending', status}  (target only)
--       | {'busy', pending, processing}   more vanished entries than one call drops; call again
--       | {'requeued', pending, processing}   (mode 'requeue')
-- each followed by the number of expired claims this call put back.
-- Expired claims go back to pending with claimedBy/claimedAt cleared and attempts + 1. Entries
-- whose message was deleted behind the service are dropped from the queue.

local pending, processing, claims, contexts, ids, feed, sizes, meta = unpack(KEYS)
local mode, target, worker, token, timeout_ms, requeue_max, stride = unpack(ARGV)
local wrong = ensure_types({pending, processing, feed}, {claims, contexts, ids, sizes, meta})
if wrong then return wrong end

local now, now_s = time_ms()

local function forget(id)
  redis.call('ZREM', pending, id)
  redis.call('ZREM', processing, id)
  redis.call('HDEL', claims, id)
  redis.call('HDEL', contexts, id)
end

local function locate(id)
  return locate_message(ids, id)
end

-- Replace a message by its new state, keeping byte counts exact.
local function rewrite(key, old, state)
  local new = state.prefix .. state_tail(state)
  replace_member(key, feed, state.score, old, new)
  local delta = #new - #old
  if delta ~= 0 then
    local total, inflight, count = size_read(sizes, key)
    if total then size_write(sizes, key, total + delta, inflight + delta, count) end
    redis.call('HINCRBY', meta, 'bytes', delta)
  end
  return new
end

local requeued = 0  -- expired claims put back by this call
for _, id in ipairs(redis.call('ZRANGE', processing, '-inf', now - tonumber(timeout_ms), 'BYSCORE', 'LIMIT', 0,
                               tonumber(requeue_max))) do
  local key, ts, member, state = locate(id)
  if not key or state.status ~= 'processing' then
    forget(id)
  else
    state.status, state.claimed_by, state.claimed_at = 'pending', 'null', 'null'
    state.attempts = tostring(tonumber(state.attempts) + 1)
    rewrite(key, member, state)
    redis.call('ZREM', processing, id)
    redis.call('HDEL', claims, id)
    redis.call('ZADD', pending, queue_rank(member, ts, stride), id)
    requeued = requeued + 1
  end
end

local function counts()
  return redis.call('ZCARD', pending), redis.call('ZCARD', processing)
end

local function claim(id, key, ts, member, state)
  state.status, state.claimed_by, state.claimed_at = 'processing', worker, now_s
  local new = rewrite(key, member, state)
  redis.call('ZREM', pending, id)
  redis.call('ZADD', processing, now_s, id)
  redis.call('HSET', claims, id, token)
  local waiting, busy = counts()
  return {'ok', new, redis.call('HGET', contexts, id) or false, waiting, busy, requeued}
end

if mode == 'requeue' then
  local waiting, busy = counts()
  return {'requeued', waiting, busy, requeued}
end

if mode == 'id' then
  local key, ts, member, state = locate(target)
  if not key then
    if in_queue(pending, processing, target) then forget(target) end
    return {'not_found', requeued}
  end
  if state.status == '' then return {'not_queued', requeued} end
  -- A pending message missing from the queue (its key was deleted behind us) is claimable: heal.
  if state.status ~= 'pending' or redis.call('ZSCORE', processing, target) then
    return {'not_pending', state.status, requeued}
  end
  return claim(target, key, ts, member, state)
end

for _ = 1, 64 do
  local head = redis.call('ZRANGE', pending, 0, 0)[1]
  if not head then
    local waiting, busy = counts()
    return {'empty', waiting, busy, requeued}
  end
  local key, ts, member, state = locate(head)
  if key and state.status == 'pending' then return claim(head, key, ts, member, state) end
  if key and state.status == 'processing' then
    redis.call('ZREM', pending, head)  -- claimed already: the stray pending entry goes
  else
    forget(head)  -- its message was deleted or trimmed behind the service
  end
end
local waiting, busy = counts()
return {'busy', waiting, busy, requeued}
