-- read_sessions: one page of a human's God Mode sessions (or one pair's), newest first by their
-- first message. Cost is proportional to the page, not to the human's sessions: the index is
-- ranged by rank from the cursor, at most 2 x limit entries are examined, and the page stops
-- at max_bytes of returned messages (the first row always comes).
--
-- KEYS[1]  index   sessions:{p}:{hU}:{hC}[:{aU}:{aC}]   zset  "{aU}:{aC}:{sid}" -> first message score
-- KEYS[2]  ids     ids:{p}                             hash  id -> location record
-- KEYS[3]  sizes   sizes:{p}                           hash  message key -> size record
-- ARGV: key_prefix ('godmode:{hU}:{hC}:'), key_suffix ('' or, on a cluster, the partition's tag), after_member ('' = from the newest; else the last
-- member of the previous page), after_score (its score: a member gone since resumes by score),
-- limit, max_bytes
--
-- Returns {total (ZCARD), next member or '' (done), next score or '', then per session 7 fields:
-- member, score, count, bytes, first JSON, last timestamp, replied-to JSON or false}.
-- A session whose key was deleted behind the service is skipped (its index entry stays).

local index, ids, sizes = unpack(KEYS)
local key_prefix, key_suffix, after_member, after_score, limit, max_bytes = unpack(ARGV)
limit, max_bytes = tonumber(limit), tonumber(max_bytes)

local total = redis.call('ZCARD', index)
local start = 0
if after_member ~= '' then
  local rank = redis.call('ZREVRANK', index, after_member)
  if rank then
    start = rank + 1
  else  -- gone since: resume after its score (sessions of that very score may come again)
    start = redis.call('ZCOUNT', index, '(' .. after_score, '+inf')
  end
end

local out = {total, '', ''}
local found, used, examined = 0, 0, 0
local last_member, last_score = nil, nil
local entries = redis.call('ZRANGE', index, start, start + 2 * limit - 1, 'REV', 'WITHSCORES')
for i = 1, #entries, 2 do
  local member, score = entries[i], entries[i + 1]
  local row = session_row(key_prefix .. member .. key_suffix, ids, sizes)
  if row then
    local size = #row[3] + (row[5] and #row[5] or 0)
    if found > 0 and used + size > max_bytes then break end
    used, found = used + size, found + 1
    out[#out + 1] = member
    out[#out + 1] = score
    for _, field in ipairs(row) do out[#out + 1] = field end
  end
  examined = examined + 1
  last_member, last_score = member, score
  if found == limit then break end
end
if last_member and start + examined < total then
  out[2], out[3] = last_member, last_score
end
return out
