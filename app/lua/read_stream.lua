-- read_stream: one page of the global poll, messages gathered from the keys the index points to.
--
-- KEYS[1]  store:stream      stream  "<ts>-0" k=<message key> t=h|a
-- KEYS[2]  store:stats       hash    globalScore
-- ARGV[1]  start: '-' or '(<after>-0' (exclusive)
-- ARGV[2]  limit
-- ARGV[3]  type filter: '' | 'h' | 'a'
--
-- Returns {globalScore, nextAfter, hasMore, message JSON...} oldest first. nextAfter is the last
-- index entry looked at (0 when none), so a client following it never misses or repeats.
--
-- Index entries of one key form runs; each key is read once with one ZRANGE over the span of
-- its entries. Every message in that span has its own index entry inside this page (timestamps
-- are unique and appends/trims update key and index together), so members line up with
-- entries in order.

local limit = tonumber(ARGV[2])
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', limit + 1)
local n = #entries
local has_more = 0
if n > limit then n = limit; has_more = 1 end

local first, last, order = {}, {}, {}
local keys, stamps = {}, {}
for i = 1, n do
  local entry = entries[i]
  local key = entry[2][2]
  local ts = string.sub(entry[1], 1, -3)
  keys[i], stamps[i] = key, ts
  if first[key] == nil then
    first[key] = ts
    order[#order + 1] = key
  end
  last[key] = ts
end

local fetched, cursor = {}, {}
for _, key in ipairs(order) do
  fetched[key] = redis.call('ZRANGE', key, first[key], last[key], 'BYSCORE')
  cursor[key] = 0
end

local out = {redis.call('HGET', KEYS[2], 'globalScore') or '0', n > 0 and stamps[n] or '0', has_more}
local want = ARGV[3]
for i = 1, n do
  local key = keys[i]
  local at = cursor[key] + 1
  cursor[key] = at
  if want == '' or entries[i][2][4] == want then
    local message = fetched[key][at]
    if message then out[#out + 1] = message end
  end
end
return out
