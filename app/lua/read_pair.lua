-- read_pair: the newest messages of a pair: its conv: key and, for GodMode, every session key of
-- the pair (its own sessions index). Cost is proportional to the pair's sessions, not to the keyspace. Messages of the
-- current millisecond wait for the next read: one committed later in it would otherwise have a
-- timestamp equal to one already returned, and a reader following `after` would miss it.
--
-- KEYS[1]  conv        conv:{hU}:{hC}:{aU}:{aC}
-- KEYS[2]  pair_sessions  sessions:{p}:{hU}:{hC}:{aU}:{aC}   zset, members "{aU}:{aC}:{sid}"
-- ARGV: key_prefix ('godmode:{hU}:{hC}:'), key_suffix ('' or, on a cluster, the partition's tag),
-- min_score (after + 1: timestamps are whole ms), limit,
-- with_sessions ('1' = merge the pair's God Mode sessions)
--
-- Returns the last `limit` message JSONs with timestamp > after, oldest first.

local conv, pair_sessions = unpack(KEYS)
local key_prefix, key_suffix, min_score, limit, with_sessions = unpack(ARGV)
limit = tonumber(limit)
local _, now_s = time_ms()
local before = '(' .. now_s

local gathered = {}
local function take(key)
  local rows = redis.call('ZRANGE', key, before, min_score, 'BYSCORE', 'REV', 'LIMIT', 0, limit, 'WITHSCORES')
  for i = 1, #rows, 2 do
    gathered[#gathered + 1] = {tonumber(rows[i + 1]), rows[i]}
  end
end

take(conv)
if with_sessions == '1' then
  for _, member in ipairs(redis.call('ZRANGE', pair_sessions, 0, -1)) do
    take(key_prefix .. member .. key_suffix)
  end
end

table.sort(gathered, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
local out = {}
for i = math.max(1, #gathered - limit + 1), #gathered do
  out[#out + 1] = gathered[i][2]
end
return out
