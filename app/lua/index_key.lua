-- index_key: index a message key that already holds messages into its partition, with the
-- helpers the append path uses (rebuild-indexes and repartition call it once per key).
--
-- KEYS[1]  key          conv:... or godmode:...   zset  ts -> message JSON
-- KEYS[2]  feed, KEYS[3] ids, KEYS[4] meta, KEYS[5] sizes, KEYS[6] pending, KEYS[7] processing
-- KEYS[8]  sessions     sessions:{p}:{hU}:{hC}             zset  the human's sessions, by first message
-- KEYS[9]  pair_sessions sessions:{p}:{hU}:{hC}:{aU}:{aC}  zset  the pair's sessions, by first message
-- KEYS[10] session_ids  sessionids:{p}                     hash  "{hU}:{hC}:{sid}" -> session member
-- ARGV: kind ('conv' | 'godmode'), session_member ('' unless godmode), session_field ('{hU}:{hC}:{sid}'),
-- feed_window, stride (queue rank per priority step)
--
-- Returns {messages indexed, bytes}; {0, 0} when the key is already indexed (safe to repeat).

local key, feed, ids, meta, sizes, pending, processing, sessions, pair_sessions, session_ids = unpack(KEYS)
local kind, session_member, session_field, feed_window, stride = unpack(ARGV)
feed_window, stride = tonumber(feed_window), tonumber(stride)

if redis.call('HEXISTS', sizes, key) == 1 then return {0, 0} end
local rows = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
if #rows == 0 then return {0, 0} end

local m = meta_read(meta)
local feed_count = redis.call('ZCARD', feed)
local total, inflight, count = 0, 0, 0
for i = 1, #rows, 2 do
  local member, score = rows[i], rows[i + 1]
  local ts = int_s(math.floor(tonumber(score)))
  local id = message_id(member)
  local domain = string.match(member, '^{"id":"[^"]+","timestamp":%d+,"domain":"([^"]+)"')
  if id and domain then
    count, total = count + 1, total + #member
    redis.call('HSET', ids, id, loc_pack(ts, domain, key))
    feed_add(feed, score, member, feed_count, feed_window)
    feed_count = redis.call('ZCARD', feed)
    local state = state_read(member)
    if state then
      m.globalScore = m.globalScore + tonumber(state.eq)
      if state.status == 'pending' then
        redis.call('ZADD', pending, queue_rank(member, ts, stride), id)
        inflight = inflight + #member
      elseif state.status == 'processing' then
        redis.call('ZADD', processing, state.claimed_at == 'null' and ts or state.claimed_at, id)
        inflight = inflight + #member
      end
    end
    if tonumber(ts) >= m.clock then m.clock, m.seq = tonumber(ts), SEQ_PER_MS - 1 end
  end
end
size_write(sizes, key, total, inflight, count)
m[kind .. 'Keys'] = m[kind .. 'Keys'] + 1
m.messages = m.messages + count
m.bytes = m.bytes + total
meta_write(meta, m)
if session_member ~= '' then  -- scored by its first message, as append_message does
  session_index_write(sessions, pair_sessions, session_ids, session_member, session_field, rows[2], {})
end
return {count, total}
