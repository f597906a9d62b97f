-- read_message: one message by id, with its location and queue context, and the server clock.
--
-- KEYS[1]  store:msgloc            hash    id -> "<ts> <domain> <message key>"
-- KEYS[2]  queue:context:{id}      string
-- ARGV[1]  id
--
-- Returns {now, key, ts, message JSON or false, context or false}, or {now} when the id is
-- unknown. A known id whose message was trimmed returns false for the message.

local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local loc = redis.call('HGET', KEYS[1], ARGV[1])
if not loc then return {now} end
local ts, key = string.match(loc, '^(%d+) %S+ (.+)$')
local found = redis.call('ZRANGE', key, ts, ts, 'BYSCORE')
return {now, key, ts, found[1] or false, redis.call('GET', KEYS[2]) or false}
