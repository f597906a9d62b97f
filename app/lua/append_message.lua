-- append_message: store one message and update its partition's indexes in one atomic step.
--
-- KEYS[1]  key          conv:... or godmode:...            zset  ts -> message JSON
-- KEYS[2]  feed         feed:{p}                           zset  ts -> copy of the newest messages, + mark
-- KEYS[3]  ids          ids:{p}                            hash  id -> location record
-- KEYS[4]  lapses       lapses:{p}                         zset  trimmed id -> ms its record lapses
-- KEYS[5]  meta         meta:{p}                           hash  clock and counters
-- KEYS[6]  sizes        sizes:{p}                          hash  message key -> size record
-- KEYS[7]  pending      pending:{p}                        zset  id -> rank
-- KEYS[8]  processing   processing:{p}                     zset  id -> claimedAt
-- KEYS[9]  contexts     contexts:{p}                       hash  id -> context JSON
-- KEYS[10] sessions     sessions:{p}:{hU}:{hC}             zset  the human's sessions, by first message
-- KEYS[11] pair_sessions sessions:{p}:{hU}:{hC}:{aU}:{aC}  zset  the pair's sessions, by first message
-- KEYS[12] session_ids  sessionids:{p}                     hash  "{hU}:{hC}:{sid}" -> session member
--
-- ARGV: id, middle (JSON after the domain up to the state tail), status ('' | 'pending' |
-- 'complete'), eq_score, domain ('' = the replied-to message's, else default_domain),
-- default_domain, reply_to ('' = none), kind ('conv' | 'godmode'), conv_window, max_bytes,
-- feed_window, ttl_ms (idempotency after trim), rank_base ('' = not queued), context ('' = none),
-- session_member ('' unless godmode), session_field ('{hU}:{hC}:{sid}', '' unless godmode)
--
-- Returns {'ok', ts, domain} | {'duplicate', location record}
--   | {'too_large', size, limit, bytes}   one message over the limit, or a full God Mode session
--   | {'backlog', size, limit, in-flight bytes}   a conv whose queued messages alone fill it
--
-- Everything is read and checked before the first write, so a refusal or an error (WRONGTYPE)
-- leaves nothing behind. A key deleted or evicted behind the service is re-derived, not trusted.

local key, feed, ids, lapses, meta, sizes, pending, processing, contexts, sessions, pair_sessions,
  session_ids = unpack(KEYS)
local id, middle, status, eq_score, domain, default_domain, reply_to, kind, conv_window, max_bytes,
  feed_window, ttl_ms, rank_base, context, session_member, session_field = unpack(ARGV)
conv_window, max_bytes, feed_window = tonumber(conv_window), tonumber(max_bytes), tonumber(feed_window)
local queued = rank_base ~= ''

-- Read and check.
local now, now_s = time_ms()
local loc, parent_loc  -- location records of this id and of the replied-to one
if reply_to ~= '' then
  local locs = redis.call('HMGET', ids, id, reply_to)
  loc, parent_loc = locs[1], locs[2]
else
  loc = redis.call('HGET', ids, id)
end
local lapsed = false
if loc then
  local lapses_at = redis.call('ZSCORE', lapses, id)
  if not lapses_at or tonumber(lapses_at) > now then return {'duplicate', loc} end
  lapsed = true  -- its trimmed message's record ran out: the id is free again
end
if domain == '' then
  local _, parent_domain = nil, nil
  if parent_loc then _, parent_domain = loc_parse(parent_loc) end
  domain = parent_domain or default_domain
end

-- The meta hash (see META_FIELDS), read as strings: only what this append changes is parsed,
-- and only what it changes or finds not written as int_s writes it is written back.
local mv = redis.call('HMGET', meta, unpack(META_FIELDS))
local clock = num(mv[1])
local feed_count = redis.call('ZCARD', feed)
local clock_seq
if clock == 0 and feed_count > 0 then  -- meta lost: the feed still knows the newest time
  clock = math.floor(tonumber(redis.call('ZRANGE', feed, -1, -1, 'WITHSCORES')[2]))
  clock_seq = SEQ_PER_MS - 1
end
-- Never before the partition's previous message; later in the same ms only by seq, so the wall
-- clock is never outrun (a ms would need 1024 appends to one partition to move on).
local ts, seq, ts_s = now, 0, now_s
if now <= clock then
  ts, seq = clock, (clock_seq or num(mv[2])) + 1
  if seq >= SEQ_PER_MS then ts, seq = clock + 1, 0 end
  ts_s = int_s(ts)
end
local score = seq == 0 and ts_s or score_s(ts, seq)
local member = '{"id":"' .. id .. '","timestamp":' .. ts_s .. ',"domain":"' .. domain .. '",' .. middle ..
  state_tail_of(status, 'null', 'null', '0', status == 'complete' and ts_s or 'null', eq_score)
local size = #member

local card = redis.call('ZCARD', key)
local rec_total, rec_inflight_s, rec_count = size_read_s(sizes, key)
local total, inflight = rec_total, nil  -- inflight: parsed when needed, else written back as read
if rec_total == nil or rec_count ~= card then  -- deleted, evicted or restored behind us
  total, inflight = derive_sizes(key, pending, processing)
  rec_inflight_s = nil
end

if size > max_bytes then return {'too_large', size, max_bytes, total} end
local victims, victim_ids = nil, nil  -- rows this append trims, and their ids
local count = card
if kind == 'godmode' then
  if total + size > max_bytes then return {'too_large', size, max_bytes, total} end
elseif count >= conv_window or total + size > max_bytes then
  inflight = inflight or tonumber(rec_inflight_s)
  if inflight + size > max_bytes and rec_total ~= nil then
    total, inflight = derive_sizes(key, pending, processing)  -- the queue may have moved behind us
  end
  if inflight + size > max_bytes then return {'backlog', size, max_bytes, inflight} end
  -- Oldest first, skipping messages still pending or processing: those are never dropped. Read
  -- in batches that double (1, 2, 4 ... 64 rows): usually the oldest row goes, and a head of many
  -- queued messages costs a few calls per batch, not three per message.
  victims, victim_ids = {}, {}
  local from, batch = 0, 1
  while count >= conv_window or total + size > max_bytes do
    local rows = redis.call('ZRANGE', key, from, from + batch - 1)
    if not rows[1] then break end  -- everything left is in flight: the window yields, not the queue
    local row_ids, queued = queued_rows(pending, processing, rows, 1, #rows)
    for i, row in ipairs(rows) do
      if not (count >= conv_window or total + size > max_bytes) then break end
      if not queued[i] then
        victims[#victims + 1] = row
        victim_ids[#victim_ids + 1] = row_ids[i]
        count, total = count - 1, total - #row
      end
    end
    from, batch = from + #rows, math.min(batch * 2, 64)
  end
end
if queued then
  redis.call('ZSCORE', pending, id)
  redis.call('HEXISTS', contexts, id)
end
local session_seen, first_score
if session_member ~= '' then
  session_seen = session_index_read(sessions, pair_sessions, session_ids, session_member, session_field)
  -- A session's messages are never trimmed: its first message stays first.
  first_score = card == 0 and score or redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
end

-- Write. lapses comes first: its type is checked by this first write when no read did.
if lapsed then redis.call('ZREM', lapses, id) end
if victims and victims[1] then
  local expiry = int_s(now + tonumber(ttl_ms))
  local lapse_args = {}
  for i, row_id in ipairs(victim_ids) do
    lapse_args[2 * i - 1], lapse_args[2 * i] = expiry, row_id
  end
  redis.call('ZADD', lapses, unpack(lapse_args))
  redis.call('ZREM', key, unpack(victims))
  feed_count = feed_count - redis.call('ZREM', feed, unpack(victims))
  -- Forget idempotency records whose time is up: trims make one each, this sweeps up to 16.
  local lapsed_ids = redis.call('ZRANGE', lapses, '-inf', now_s, 'BYSCORE', 'LIMIT', '0', '16')
  if #lapsed_ids > 0 then
    redis.call('HDEL', ids, unpack(lapsed_ids))
    redis.call('ZREM', lapses, unpack(lapsed_ids))
  end
end

redis.call('ZADD', key, score, member)
local inflight_s
if queued then
  inflight_s = int_s((inflight or tonumber(rec_inflight_s)) + size)
else
  inflight_s = inflight and int_s(inflight) or rec_inflight_s
end
redis.call('HSET', sizes, key, size_pack(int_s(total + size), inflight_s, int_s(count + 1)))
if feed_count == 0 and clock > 0 then
  redis.call('ZADD', feed, int_s(clock), MARK)  -- the feed was lost: what it held may be gone
  feed_count = 1
end
feed_add(feed, score, member, feed_count, feed_window)
redis.call('HSET', ids, id, loc_pack(ts_s, domain, key))

local new_key = rec_total == nil
local conv_keys = counter_s(mv[3], (new_key and kind == 'conv') and 1 or 0)
local godmode_keys = counter_s(mv[4], (new_key and kind == 'godmode') and 1 or 0)
local global_score = counter_s(mv[7], eq_score == '0' and 0 or tonumber(eq_score))
local seq_s = seq == 0 and '0' or int_s(seq)
local messages_s = int_s(num(mv[5]) + count + 1 - (rec_count or 0))
local bytes_s = int_s(num(mv[6]) + total + size - (rec_total or 0))
if conv_keys or godmode_keys or global_score then  -- in META_FIELDS' order, as a new meta hash had them
  local args, values = {}, {ts_s, seq_s, conv_keys, godmode_keys, messages_s, bytes_s, global_score}
  for i, field in ipairs(META_FIELDS) do
    if values[i] then
      args[#args + 1] = field
      args[#args + 1] = values[i]
    end
  end
  redis.call('HSET', meta, unpack(args))
else  -- the usual append
  redis.call('HSET', meta, 'clock', ts_s, 'seq', seq_s, 'messages', messages_s, 'bytes', bytes_s)
end

if session_member ~= '' then
  session_index_write(sessions, pair_sessions, session_ids, session_member, session_field, first_score, session_seen)
end
if queued then
  redis.call('ZADD', pending, int_s(tonumber(rank_base) + ts), id)
  if context ~= '' then redis.call('HSET', contexts, id, context) end
end
return {'ok', ts_s, domain}
