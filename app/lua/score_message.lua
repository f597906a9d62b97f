-- score_message: set a message's eqScore in place (same timestamp: overlapping polls re-deliver it)
-- and move the partition's globalScore by the difference, atomically.
--
-- KEYS[1]  ids     ids:{p}     hash  id -> location record
-- KEYS[2]  feed    feed:{p}    zset  copies of the newest messages
-- KEYS[3]  sizes   sizes:{p}   hash  message key -> size record
-- KEYS[4]  meta    meta:{p}    hash  counters (bytes, globalScore)
-- KEYS[5]  pending, KEYS[6] processing   zsets: whether the message's bytes are in flight
--
-- ARGV: id, score (0-100)
--
-- Returns {'ok', message JSON} | {'not_found'}

local ids, feed, sizes, meta, pending, processing = unpack(KEYS)
local id, score = unpack(ARGV)
local wrong = ensure_types({feed, pending, processing}, {ids, sizes, meta})
if wrong then return wrong end

local key, _, member, state = locate_message(ids, id)
if not key then return {'not_found'} end

local delta = tonumber(score) - tonumber(state.eq)
state.eq = score
local new = state.prefix .. state_tail(state)
if new ~= member then
  replace_member(key, feed, state.score, member, new)
  local total, inflight, count = size_read(sizes, key)
  if total then
    local moved = in_queue(pending, processing, id) and #new - #member or 0
    size_write(sizes, key, total + #new - #member, inflight + moved, count)
  end
  if #new ~= #member then redis.call('HINCRBY', meta, 'bytes', #new - #member) end
  if delta ~= 0 then redis.call('HINCRBY', meta, 'globalScore', delta) end
end
return {'ok', new}
