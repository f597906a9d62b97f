-- append_message: store one message and update every index in one atomic step.
--
-- KEYS[1]  message key: conv:... or godmode:...    zset  ts -> message JSON
-- KEYS[2]  size:{message key}                      hash  total (bytes), inflight (bytes), count
-- KEYS[3]  inflight:{message key}                  zset  id -> ts, pending/processing messages
-- KEYS[4]  store:msgloc                            hash  id -> "<ts> <domain> <message key>",
--                                                        and ':clock' -> last timestamp handed out
-- KEYS[5]  store:msgloc:expiry                     zset  trimmed id -> ms its record lapses
-- KEYS[6]  store:stream                            stream  "<ts>-0" k=<message key> t=h|a
-- KEYS[7]  store:stats                             hash  counters, globalScore
-- KEYS[8]  queue:pending                           zset  id -> rank
-- KEYS[9]  queue:context:{id}                      string  the bot's context JSON
-- KEYS[10] sessions:{hU}:{hC}                      zset  "{aU}:{aC}:{sid}" (godmode only)
-- KEYS[11] store:recent                            zset  ts -> message JSON, the newest ARGV[18]
--
-- ARGV[1]  id
-- ARGV[2]  JSON head, ending in '"timestamp":'
-- ARGV[3]  JSON tail after the domain, starting with ','
-- ARGV[4]  second tail part: when not '', the tail ends in a timestamp placeholder
--          (completedAt) and the message is head..ts..domain..ARGV[3]..ts..ARGV[4]
-- ARGV[5]  domain ('' = take the replied-to message's, else ARGV[6])
-- ARGV[6]  default domain
-- ARGV[7]  replyTo id ('' = none)
-- ARGV[8]  'conv' | 'godmode'
-- ARGV[9]  conv window (messages)
-- ARGV[10] max bytes per message key
-- ARGV[11] stream window (entries)
-- ARGV[12] idempotency ttl after trim (ms)
-- ARGV[13] type flag 'h' | 'a'
-- ARGV[14] eqScore
-- ARGV[15] queue rank base ('' = not queued; else rank = base + ts)
-- ARGV[16] context JSON ('' = none)
-- ARGV[17] session member for KEYS[10] ('' = none)
-- ARGV[18] how many newest messages store:recent keeps
--
-- Returns one of
--   {'ok', ts, domain}
--   {'duplicate', "<ts> <domain> <key>"}
--   {'too_large', size, limit, current}     one message bigger than the limit, or a full session
--   {'backlog', size, limit, inflight}      conv: in-flight messages alone leave no room
--
-- Redis CPU is the budget here (~1 us per redis.call): reads are batched into one HMGET per hash.

local key, id = KEYS[1], ARGV[1]
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000)

local loc = redis.call('HMGET', KEYS[4], id, ':clock', ARGV[7] ~= '' and ARGV[7] or ':clock')
if loc[1] then
  local lapses = redis.call('ZSCORE', KEYS[5], id)
  if not lapses or tonumber(lapses) > now then
    return {'duplicate', loc[1]}
  end
  redis.call('ZREM', KEYS[5], id)  -- its trimmed message's record lapsed: the id is free again
end

local domain = ARGV[5]
if domain == '' then
  domain = (ARGV[7] ~= '' and loc[3] and string.match(loc[3], '^%d+ (%S+) ')) or ARGV[6]
end

-- Strictly increasing across every writer: a poller that saw T never misses a later commit.
local ts = now
local last = tonumber(loc[2] or '0')
if ts <= last then ts = last + 1 end
local ts_s = string.format('%.0f', ts)

local member = ARGV[2] .. ts_s .. ',"domain":"' .. domain .. '"' .. ARGV[3]
if ARGV[4] ~= '' then member = member .. ts_s .. ARGV[4] end
local size = #member
local limit = tonumber(ARGV[10])
local sizes = redis.call('HMGET', KEYS[2], 'total', 'inflight', 'count')
local total = tonumber(sizes[1] or '0')
local inflight_bytes = tonumber(sizes[2] or '0')
local count = tonumber(sizes[3] or '0')
local created = count == 0

if size > limit then
  return {'too_large', size, limit, total}
end

local stats_messages, stats_bytes = 1, size
if ARGV[8] == 'godmode' then
  if total + size > limit then
    return {'too_large', size, limit, total}
  end
elseif count >= tonumber(ARGV[9]) or total + size > limit then
  if inflight_bytes + size > limit then
    return {'backlog', size, limit, inflight_bytes}
  end
  local window = tonumber(ARGV[9])
  local inflight_count = redis.call('ZCARD', KEYS[3])

  -- Rank of the oldest message that is neither pending nor processing. In-flight entries are
  -- a subset of the key, so the p oldest members are all in flight exactly when
  -- ZCOUNT(key, -inf, p-th in-flight ts) == p; binary search keeps this O(log^2) however many
  -- are in flight.
  local function oldest_evictable()
    local lo, hi = 0, inflight_count
    while lo < hi do
      local mid = math.floor((lo + hi + 1) / 2)
      local s = redis.call('ZRANGE', KEYS[3], mid - 1, mid - 1, 'WITHSCORES')[2]
      if redis.call('ZCOUNT', key, '-inf', s) == mid then lo = mid else hi = mid - 1 end
    end
    return lo
  end

  local expiry = string.format('%.0f', now + tonumber(ARGV[12]))
  while count > inflight_count and (count >= window or total + size > limit) do
    local rank = inflight_count > 0 and oldest_evictable() or 0
    local victim
    if rank == 0 then
      victim = redis.call('ZPOPMIN', key)
    else
      victim = redis.call('ZRANGE', key, rank, rank, 'WITHSCORES')
      redis.call('ZREMRANGEBYRANK', key, rank, rank)
    end
    redis.call('XDEL', KEYS[6], victim[2] .. '-0')
    redis.call('ZREMRANGEBYSCORE', KEYS[11], victim[2], victim[2])  -- by score: no payload copy
    local victim_id = string.match(victim[1], '^{"id":"([^"]+)"')
    if victim_id then redis.call('ZADD', KEYS[5], expiry, victim_id) end
    count = count - 1
    total = total - #victim[1]
    stats_messages = stats_messages - 1
    stats_bytes = stats_bytes - #victim[1]
  end

  -- Forget idempotency records whose time is up. Trims create them, one each; sweeping up to
  -- 16 on every ~8th trim outpaces that (a lapsed record found early is checked above).
  if ts % 8 == 0 then
    local lapsed = redis.call('ZRANGE', KEYS[5], '-inf', now, 'BYSCORE', 'LIMIT', 0, 16)
    if #lapsed > 0 then
      redis.call('HDEL', KEYS[4], unpack(lapsed))
      redis.call('ZREM', KEYS[5], unpack(lapsed))
    end
  end
end

redis.call('ZADD', key, ts_s, member)
redis.call('HSET', KEYS[2], 'total', total + size, 'count', count + 1)
redis.call('XADD', KEYS[6], 'MAXLEN', ARGV[11], ts_s .. '-0', 'k', key, 't', ARGV[13])
-- A copy of the newest messages lets a recent poll be one native ZRANGE: payloads moved
-- through Lua cost ~1 us per KB, a native read a fraction of that.
redis.call('ZADD', KEYS[11], ts_s, member)
if ts % 8 == 0 then  -- trimming every ~8th append keeps the copies within a few of the bound
  redis.call('ZREMRANGEBYRANK', KEYS[11], 0, -1 - tonumber(ARGV[18]))
end
redis.call('HSET', KEYS[4], id, ts_s .. ' ' .. domain .. ' ' .. key, ':clock', ts_s)

if created then
  redis.call('HINCRBY', KEYS[7], ARGV[8] .. 'Keys', 1)
  if ARGV[17] ~= '' then redis.call('ZADD', KEYS[10], 0, ARGV[17]) end
end
if stats_messages ~= 0 then redis.call('HINCRBY', KEYS[7], 'messages', stats_messages) end
if stats_bytes ~= 0 then redis.call('HINCRBY', KEYS[7], 'bytes', stats_bytes) end
if ARGV[14] ~= '0' then redis.call('HINCRBY', KEYS[7], 'globalScore', ARGV[14]) end

if ARGV[15] ~= '' then
  redis.call('ZADD', KEYS[8], string.format('%.0f', tonumber(ARGV[15]) + ts), id)
  redis.call('ZADD', KEYS[3], ts_s, id)
  redis.call('HINCRBY', KEYS[2], 'inflight', size)
  if ARGV[16] ~= '' then redis.call('SET', KEYS[9], ARGV[16]) end
end

return {'ok', ts_s, domain}
