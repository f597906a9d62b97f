-- read_session: one God Mode session, its summary and its messages (oldest first) up to max_bytes
-- (the first message always comes). Reads only this session's key.
--
-- KEYS[1]  key     godmode:{hU}:{hC}:{aU}:{aC}:{sid}   zset  the session's messages
-- KEYS[2]  ids     ids:{p}                             hash  id -> location record
-- KEYS[3]  sizes   sizes:{p}                           hash  message key -> size record
-- ARGV: max_bytes
--
-- Returns {} when the key is empty or gone, else {count, bytes, first JSON, last timestamp,
-- replied-to JSON or false, {messages}, truncated (1 = more messages than max_bytes held)}.

local key, ids, sizes = unpack(KEYS)
local max_bytes = unpack(ARGV)
max_bytes = tonumber(max_bytes)

local row = session_row(key, ids, sizes)
if not row then return {} end
local messages, used, truncated = {}, 0, 0
local at = 0
while truncated == 0 do
  local chunk = redis.call('ZRANGE', key, at, at + 19)
  if #chunk == 0 then break end
  for _, m in ipairs(chunk) do
    if #messages > 0 and used + #m > max_bytes then
      truncated = 1
      break
    end
    messages[#messages + 1] = m
    used = used + #m
  end
  at = at + 20
end
row[#row + 1] = messages
row[#row + 1] = truncated
return row
