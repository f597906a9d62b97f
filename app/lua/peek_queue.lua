-- peek_queue: what a claimer should act on next, read in one step.
--
-- KEYS[1]  queue:pending       zset  id -> rank
-- KEYS[2]  queue:processing    zset  id -> claimedAt ms
-- KEYS[3]  store:msgloc        hash  id -> "<ts> <domain> <message key>"
-- ARGV[1]  claim timeout (ms)
-- ARGV[2]  context key prefix 'queue:context:'
--
-- Returns {now, pending, processing, kind, id, key, ts, message JSON or false, context or false}
-- where kind is 'expired' (a claim older than the timeout, to put back), 'pending' (the head of
-- the queue) or '' (nothing to do; no further fields).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {string.format('%.0f', now), redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])}

local kind = 'expired'
local ids = redis.call('ZRANGE', KEYS[2], '-inf', now - tonumber(ARGV[1]), 'BYSCORE', 'LIMIT', 0, 1)
if #ids == 0 then
  kind = 'pending'
  ids = redis.call('ZRANGE', KEYS[1], 0, 0)
end
if #ids == 0 then
  out[4] = ''
  return out
end
local id = ids[1]
out[4], out[5] = kind, id
local loc = redis.call('HGET', KEYS[3], id)
if not loc then return out end
local ts, key = string.match(loc, '^(%d+) %S+ (.+)$')
out[6], out[7] = key, ts
out[8] = redis.call('ZRANGE', key, ts, ts, 'BYSCORE')[1] or false
out[9] = redis.call('GET', ARGV[2] .. id) or false
return out
