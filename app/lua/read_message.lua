-- read_message: one message by id, with its queue context.
--
-- KEYS[1]  ids        ids:{p}        hash  id -> location record
-- KEYS[2]  contexts   contexts:{p}   hash  id -> context JSON
-- ARGV: id
--
-- Returns {key, message JSON or false, context or false}, or {} when the id is unknown here.
-- A known id whose message was trimmed or deleted returns false for the message.

local ids, contexts = unpack(KEYS)
local id = ARGV[1]
local loc = redis.call('HGET', ids, id)
if not loc then return {} end
local ts, _, key = loc_parse(loc)
return {key, find_member(key, ts, id) or false, redis.call('HGET', contexts, id) or false}
