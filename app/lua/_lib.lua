-- _lib: shared by every script (Store prepends the top-level definitions each one uses, each with
-- the comment above it). The owner of three byte formats (on the Python side, app/scripts.py's
-- parse_location reads the location record and app/models.py's Message types the stored message;
-- the size record lives in Lua only):
--   location record  ids hash value   "<ts> <domain> <message key>"
--   size record      sizes hash value "<bytes> <in-flight bytes> <count>"
--   message state    the stored message's mutable tail (the rest of the JSON never changes):
--     with botParams:   ..."status":"pending","claimedBy":null,"claimedAt":null,"attempts":0,"completedAt":null},"eqScore":0}
--     without:          ..."eqScore":0}
-- A message's zset score is its timestamp plus seq/1024, seq counting the partition's messages
-- within one millisecond: a key reads in commit order while JSON timestamps stay whole ms.
-- BYSCORE bounds are therefore whole numbers: "timestamp > T" is the inclusive min T + 1.

local MARK = '~'  -- feed member whose score is the newest timestamp the feed no longer holds

-- Now in ms, as a number and as its decimal string: seconds .. the microseconds' zero-padded
-- thousands, so the string costs no number formatting (the string is int_s(number)).
local function time_ms()
  local t = redis.call('TIME')
  local s = t[1] .. string.sub('00000' .. t[2], -6, -4)
  return tonumber(s), s
end

local function num(value)  -- a stored counter; garbage reads as 0 and is overwritten
  return tonumber(value or '0') or 0
end

local function int_s(value)
  return string.format('%.0f', value)
end

-- Whether a stored counter is already written as int_s writes it (so writing it again changes nothing).
local function canonical(value)
  return value == '0' or (value and #value < 16 and string.find(value, '^%-?[1-9]%d*$') ~= nil)
end

-- A stored counter moved by delta, as int_s writes it; nil when writing it would change nothing.
local function counter_s(stored, delta)
  if delta == 0 and canonical(stored) then return nil end
  return int_s(num(stored) + delta)
end

local SEQ_PER_MS = 1024  -- 2^10: ts < 2^43 keeps ts + seq/1024 exact in a double

local function score_s(ts, seq)
  if seq == 0 then return int_s(ts) end
  return string.format('%.10f', ts + seq / SEQ_PER_MS)
end

local function loc_pack(ts, domain, key)
  return ts .. ' ' .. domain .. ' ' .. key
end

local function loc_parse(loc)  -- ts (string), domain, key
  return string.match(loc, '^(%d+) (%S+) (.+)$')
end

local function size_pack(total_s, inflight_s, count_s)
  return total_s .. ' ' .. inflight_s .. ' ' .. count_s
end

-- total, in-flight bytes as int_s writes them (unparsed: most appends only copy it), count; nil
-- when the key is not indexed.
local function size_read_s(sizes, key)
  local rec = redis.call('HGET', sizes, key)
  if not rec then return nil end
  local total, inflight, count = string.match(rec, '^(%d+) (%d+) (%d+)$')
  if not total then return nil end
  return tonumber(total), canonical(inflight) and inflight or int_s(tonumber(inflight)), tonumber(count)
end

local function size_read(sizes, key)  -- nil when the key is not indexed
  local total, inflight, count = size_read_s(sizes, key)
  if not total then return nil end
  return total, tonumber(inflight), count
end

local function size_write(sizes, key, total, inflight, count)
  redis.call('HSET', sizes, key, size_pack(int_s(total), int_s(inflight), int_s(count)))
end

local function message_id(member)
  return string.match(member, '^{"id":"([^"]+)"')
end

-- The member of `key` with this id and timestamp (timestamps repeat within a partition) and its
-- score, or nil. pcall: a key of another type or a deleted key is "no such message", not an error.
local function find_member(key, ts, id)
  local rows = redis.pcall('ZRANGE', key, ts, '(' .. int_s(tonumber(ts) + 1), 'BYSCORE', 'WITHSCORES')
  if type(rows) ~= 'table' or rows.err then return nil end
  local prefix = '{"id":"' .. id .. '",'
  for i = 1, #rows, 2 do
    if string.sub(rows[i], 1, #prefix) == prefix then return rows[i], rows[i + 1] end
  end
  return nil
end

local function state_tail_of(status, claimed_by, claimed_at, attempts, completed_at, eq)
  if status == '' then return '"eqScore":' .. eq .. '}' end
  return '"status":"' .. status .. '","claimedBy":' .. claimed_by .. ',"claimedAt":' .. claimed_at ..
    ',"attempts":' .. attempts .. ',"completedAt":' .. completed_at .. '},"eqScore":' .. eq .. '}'
end

local function state_tail(s)
  return state_tail_of(s.status, s.claimed_by, s.claimed_at, s.attempts, s.completed_at, s.eq)
end

local STATE = '"status":"(%a+)","claimedBy":(.-),"claimedAt":(%w+),"attempts":(%d+),"completedAt":(%w+)},"eqScore":(%d+)}$'

-- The mutable state of a stored message and the bytes before it, or nil for a foreign shape.
-- Only the fixed-size tail is searched; quotes inside JSON strings are escaped, so '"status":"'
-- cannot occur inside user text.
local function state_read(member)
  local from = math.max(1, #member - 1024)
  local at, _, status, by, claimed_at, attempts, done, eq = string.find(member, STATE, from)
  if at then
    return {prefix = string.sub(member, 1, at - 1), status = status, claimed_by = by, claimed_at = claimed_at,
            attempts = attempts, completed_at = done, eq = eq}
  end
  at, _, eq = string.find(member, '"eqScore":(%d+)}$', from)
  if at then return {prefix = string.sub(member, 1, at - 1), status = '', eq = eq} end
  return nil
end

-- A queued message's rank: priority high first, then oldest (keys.queue_rank_base on the Python side).
local function queue_rank(member, ts, stride)
  local priority = tonumber(string.match(member, '"botParams":{"priority":(%d+),') or '5')
  return int_s((99 - priority) * tonumber(stride) + tonumber(ts))
end

-- Swap a stored message for its new version: same score, same place in the key and the feed.
local function replace_member(key, feed, score, old, new)
  redis.call('ZREM', key, old)
  redis.call('ZADD', key, score, new)
  if redis.call('ZREM', feed, old) == 1 then redis.call('ZADD', feed, score, new) end
end

-- Add a copy to the feed; past the window (+ slack, so this runs every ~32nd add) drop the oldest
-- copies and move the mark up to the newest dropped timestamp. `count` = ZCARD before the add.
local function feed_add(feed, ts, member, count, window)
  redis.call('ZADD', feed, ts, member)
  count = count + 1
  if count > window + 32 then
    local cut = redis.call('ZRANGE', feed, count - window - 1, count - window - 1, 'WITHSCORES')
    redis.call('ZREMRANGEBYSCORE', feed, '-inf', cut[2])
    redis.call('ZADD', feed, cut[2], MARK)
  end
end

local META_FIELDS = {'clock', 'seq', 'convKeys', 'godmodeKeys', 'messages', 'bytes', 'globalScore'}

local function meta_read(meta)
  local values = redis.call('HMGET', meta, unpack(META_FIELDS))
  local m = {}
  for i, field in ipairs(META_FIELDS) do m[field] = num(values[i]) end
  return m
end

local function meta_write(meta, m)
  local args = {}
  for _, field in ipairs(META_FIELDS) do
    args[#args + 1] = field
    args[#args + 1] = int_s(m[field])
  end
  redis.call('HSET', meta, unpack(args))
end

local function in_queue(pending, processing, id)
  return redis.call('ZSCORE', pending, id) or redis.call('ZSCORE', processing, id)
end

-- The ids of rows[first..last] and, by the same index, whether each waits in the queue (pending
-- or processing): one ZMSCORE per queue zset, not two ZSCOREs per row.
local function queued_rows(pending, processing, rows, first, last)
  local ids, queued = {}, {}
  for i = first, last do ids[#ids + 1] = message_id(rows[i]) or '' end
  local in_pending = redis.call('ZMSCORE', pending, unpack(ids))
  local in_processing = redis.call('ZMSCORE', processing, unpack(ids))
  for i = 1, #ids do queued[i] = in_pending[i] or in_processing[i] end
  return ids, queued
end

-- Bytes and in-flight bytes of a key, counted from the key itself and the queue (256 messages
-- per queue lookup: a key full of queued messages is a few calls).
local function derive_sizes(key, pending, processing)
  local total, inflight = 0, 0
  local rows = redis.call('ZRANGE', key, 0, -1)
  for first = 1, #rows, 256 do
    local last = math.min(first + 255, #rows)
    local _, queued = queued_rows(pending, processing, rows, first, last)
    for i = first, last do
      local m = rows[i]
      total = total + #m
      if queued[i - first + 1] then inflight = inflight + #m end
    end
  end
  return total, inflight
end

-- Lets a script check its keys' types before its first write (WRONGTYPE then leaves nothing
-- behind): returns an error reply to return, or nil.
local function ensure_types(zsets, hashes)
  for wanted, list in pairs({zset = zsets, hash = hashes}) do
    for _, key in ipairs(list) do
      local t = redis.call('TYPE', key)['ok']
      if t ~= 'none' and t ~= wanted then
        return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. wanted)
      end
    end
  end
  return nil
end

-- A message by id: key, ts, member, state (with .score); nil when the id is unknown, its message
-- is gone (trimmed or deleted), or it has a shape this service did not write.
local function locate_message(ids, id)
  local loc = redis.call('HGET', ids, id)
  if not loc then return nil end
  local ts, _, key = loc_parse(loc)
  local member, score = find_member(key, ts, id)
  local state = member and state_read(member)
  if not state then return nil end
  state.score = score
  return key, ts, member, state
end


-- A God Mode session is indexed three ways, all in its partition: its human's sessions zset and
-- its pair's (member "{aU}:{aC}:{sid}", score = the session's first message score, so REV ranges
-- list newest first) and the session_ids hash ("{hU}:{hC}:{sid}" -> member, lookups by id alone).
-- Read before the first write (WRONGTYPE then leaves nothing behind); write only what differs, so
-- an index deleted, or written at score 0 by an older version, heals at the session's next append.
local function session_index_read(sessions, pair_sessions, session_ids, member, field)
  return {redis.call('ZSCORE', sessions, member), redis.call('ZSCORE', pair_sessions, member),
          redis.call('HGET', session_ids, field)}
end

local function session_index_write(sessions, pair_sessions, session_ids, member, field, first_score, seen)
  for i, index in ipairs({sessions, pair_sessions}) do
    if not seen[i] or tonumber(seen[i]) ~= tonumber(first_score) then
      redis.call('ZADD', index, first_score, member)
    end
  end
  if seen[3] ~= member then redis.call('HSET', session_ids, field, member) end
end

local HUMAN_MARK = '"message-type":"human"'  -- quotes inside JSON strings are escaped: only the field matches

-- A session's summary read from its key: {count, bytes, first JSON, last timestamp, replied-to
-- JSON or false}. The replied-to message (the human's question) is read only when the first
-- message is not itself human. nil when the key is empty or gone (deleted behind the service).
local function session_row(key, ids, sizes)
  local head = redis.call('ZRANGE', key, 0, 0)
  local first = head[1]
  if not first then return nil end
  local replied = false
  if not string.find(first, HUMAN_MARK, 1, true) then
    local parent_id = string.match(first, '"replyTo":"([^"]+)"')
    local loc = parent_id and redis.call('HGET', ids, parent_id)
    if loc then
      local ts, _, parent_key = loc_parse(loc)
      replied = find_member(parent_key, ts, parent_id) or false
    end
  end
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  return {redis.call('ZCARD', key), size_read(sizes, key) or 0, first, int_s(math.floor(tonumber(last[2]))), replied}
end
