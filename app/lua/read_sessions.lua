-- read_sessions: summaries of a human's God Mode sessions (optionally one pair, one session).
-- Cost is proportional to the sessions listed, not to the keyspace.
--
-- KEYS[1]  sessions   sessions:{p}:{hU}:{hC}   zset  "{aU}:{aC}:{sid}" at score 0
-- KEYS[2]  ids        ids:{p}                  hash  id -> location record
-- KEYS[3]  sizes      sizes:{p}                hash  message key -> size record
-- ARGV: lex_start ('-' or '[{aU}:{aC}:'), lex_end ('+' or '({aU}:{aC};'), key_prefix
-- ('godmode:{hU}:{hC}:'), meta_prefix ('godmode-session:'), only_session ('' = all),
-- with_messages ('1' = every message of each listed session)
--
-- Returns, per session, 8 fields: member, count, bytes, first JSON, last JSON, replied-to JSON
-- (the message the first one replies to) or false, metadata or false, {messages} or false.
-- A session whose key was deleted behind the service is left out.

local sessions, ids, sizes = unpack(KEYS)
local lex_start, lex_end, key_prefix, meta_prefix, only_session, with_messages = unpack(ARGV)

local out = {}
for _, member in ipairs(redis.call('ZRANGE', sessions, lex_start, lex_end, 'BYLEX')) do
  local sid = string.match(member, '([^:]+)$')
  if only_session == '' or sid == only_session then
    local key = key_prefix .. member
    local first = redis.call('ZRANGE', key, 0, 0)[1]
    if first then
      local replied = false
      local parent_id = string.match(first, '"replyTo":"([^"]+)"')
      if parent_id then
        local loc = redis.call('HGET', ids, parent_id)
        if loc then
          local ts, _, parent_key = loc_parse(loc)
          replied = find_member(parent_key, ts, parent_id) or false
        end
      end
      local total = size_read(sizes, key)
      out[#out + 1] = member
      out[#out + 1] = redis.call('ZCARD', key)
      out[#out + 1] = total or 0
      out[#out + 1] = first
      out[#out + 1] = redis.call('ZRANGE', key, -1, -1)[1]
      out[#out + 1] = replied
      out[#out + 1] = redis.call('GET', meta_prefix .. sid) or false
      out[#out + 1] = with_messages == '1' and redis.call('ZRANGE', key, 0, -1) or false
    end
  end
end
return out
