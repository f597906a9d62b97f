-- read_sessions: summaries of a human's God Mode sessions (optionally one pair, one session).
-- Cost is proportional to the sessions listed, not to the keyspace.
--
-- KEYS[1]  sessions:{hU}:{hC}     zset  "{aU}:{aC}:{sid}" at score 0
-- KEYS[2]  store:msgloc           hash  id -> "<ts> <domain> <message key>"
-- ARGV[1]  lex start ('-' or '[{aU}:{aC}:')
-- ARGV[2]  lex end ('+' or '({aU}:{aC};')
-- ARGV[3]  session key prefix 'godmode:{hU}:{hC}:'
-- ARGV[4]  size key prefix, ARGV[5] size key suffix
-- ARGV[6]  metadata key prefix 'godmode-session:'
-- ARGV[7]  only this session id ('' = all)
-- ARGV[8]  '1' to include every message of each listed session
--
-- Returns, per session, 8 fields: member, count, bytes, first JSON, last JSON, replied-to JSON
-- (the message the first one replies to) or false, metadata or false, {messages} or false.

local out = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2], 'BYLEX')) do
  local sid = string.match(member, '([^:]+)$')
  if ARGV[7] == '' or sid == ARGV[7] then
    local key = ARGV[3] .. member
    local first = redis.call('ZRANGE', key, 0, 0)[1]
    if first then
      local replied = false
      local parent_id = string.match(first, '"replyTo":"([^"]+)"')
      if parent_id then
        local loc = redis.call('HGET', KEYS[2], parent_id)
        if loc then
          local ts, pkey = string.match(loc, '^(%d+) %S+ (.+)$')
          replied = redis.call('ZRANGE', pkey, ts, ts, 'BYSCORE')[1] or false
        end
      end
      out[#out + 1] = member
      out[#out + 1] = redis.call('ZCARD', key)
      out[#out + 1] = redis.call('HGET', ARGV[4] .. key .. ARGV[5], 'total') or '0'
      out[#out + 1] = first
      out[#out + 1] = redis.call('ZRANGE', key, -1, -1)[1]
      out[#out + 1] = replied
      out[#out + 1] = redis.call('GET', ARGV[6] .. sid) or false
      out[#out + 1] = ARGV[8] == '1' and redis.call('ZRANGE', key, 0, -1) or false
    end
  end
end
return out
