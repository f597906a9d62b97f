-- complete_message: mark a queued message complete and take it out of the queue, atomically.
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
-- ARGV: id, token ('' = complete whatever claim holds it)
--
-- Returns {'ok'} | {'not_found'} | {'not_queued'} | {'done_already', status}
--       | {'stale', status}   the token is not the current claim's: nothing changed

local pending, processing, claims, contexts, ids, feed, sizes, meta = unpack(KEYS)
local id, token = unpack(ARGV)
local wrong = ensure_types({pending, processing, feed}, {claims, contexts, ids, sizes, meta})
if wrong then return wrong end

local key, _, member, state = locate_message(ids, id)
if not key then
  if in_queue(pending, processing, id) then  -- its message is gone: so is its queue entry
    redis.call('ZREM', pending, id)
    redis.call('ZREM', processing, id)
    redis.call('HDEL', claims, id)
    redis.call('HDEL', contexts, id)
  end
  return {'not_found'}
end
if state.status == '' then return {'not_queued'} end
if state.status ~= 'pending' and state.status ~= 'processing' then return {'done_already', state.status} end
if token ~= '' and redis.call('HGET', claims, id) ~= token then return {'stale', state.status} end

local _, now_s = time_ms()
state.status, state.completed_at = 'complete', now_s
local new = state.prefix .. state_tail(state)
replace_member(key, feed, state.score, member, new)
local total, inflight, count = size_read(sizes, key)
if total then size_write(sizes, key, total + #new - #member, math.max(0, inflight - #member), count) end
if #new ~= #member then redis.call('HINCRBY', meta, 'bytes', #new - #member) end
redis.call('ZREM', pending, id)
redis.call('ZREM', processing, id)
redis.call('HDEL', claims, id)
redis.call('HDEL', contexts, id)
return {'ok'}
