-- purge_partition: delete a partition wholesale (its message keys, session indexes and every
-- companion) in one atomic step, so counts stay exact while traffic flows.
--
-- KEYS: the partition's own keys; KEYS[1] must be sizes:{p} (its hash names every message key).
-- ARGV: sessions_prefix ('sessions:{p}:')
-- Returns the number of keys deleted.

local sizes = KEYS[1]
local sessions_prefix = ARGV[1]
local deleted = 0
local batch = {}
local function drop(key)
  batch[#batch + 1] = key
  if #batch == 500 then
    deleted = deleted + redis.call('UNLINK', unpack(batch))
    batch = {}
  end
end
local seen = {}
for _, key in ipairs(redis.call('HKEYS', sizes)) do
  drop(key)
  local human_user, human_color, pair = string.match(key, '^godmode:([^:]+):([^:]+):([^:]+:[^:]+):')
  if human_user then
    local sessions = sessions_prefix .. human_user .. ':' .. human_color
    for _, index in ipairs({sessions, sessions .. ':' .. pair}) do  -- the human's and the pair's
      if not seen[index] then
        seen[index] = true
        drop(index)
      end
    end
  end
end
for _, key in ipairs(KEYS) do drop(key) end
if #batch > 0 then deleted = deleted + redis.call('UNLINK', unpack(batch)) end
return deleted
