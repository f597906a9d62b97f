-- read_pair: the newest messages of a human<->GodMode pair, across its conv: key and every
-- session key. Cost is proportional to the pair's sessions, not to the keyspace.
--
-- KEYS[1]  conv:{hU}:{hC}:{aU}:{aC}
-- KEYS[2]  sessions:{hU}:{hC}           zset, members "{aU}:{aC}:{sid}" at score 0
-- ARGV[1]  lex range start for the pair: '[{aU}:{aC}:'
-- ARGV[2]  lex range end for the pair:   '({aU}:{aC};'   (';' sorts right after ':')
-- ARGV[3]  session key prefix: 'godmode:{hU}:{hC}:'
-- ARGV[4]  exclusive lower score: '(<after>'
-- ARGV[5]  limit
--
-- Returns the last `limit` message JSONs with timestamp > after, oldest first.

local limit = tonumber(ARGV[5])
local gathered = {}
local function take(key)
  local rows = redis.call('ZRANGE', key, '+inf', ARGV[4], 'BYSCORE', 'REV', 'LIMIT', 0, limit, 'WITHSCORES')
  for i = 1, #rows, 2 do
    gathered[#gathered + 1] = {tonumber(rows[i + 1]), rows[i]}
  end
end

take(KEYS[1])
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], ARGV[1], ARGV[2], 'BYLEX')) do
  take(ARGV[3] .. member)
end

table.sort(gathered, function(a, b) return a[1] < b[1] end)
local out = {}
for i = math.max(1, #gathered - limit + 1), #gathered do
  out[#out + 1] = gathered[i][2]
end
return out
