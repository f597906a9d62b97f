-- purge_stray: after purge_partition, delete one key SCAN found outside the partition's index, unless
-- a write made after the purge indexed it meanwhile (checked and deleted in one atomic step).
--
-- KEYS[1]  key      a conv:/godmode: key, or a human's sessions:{p}:{hU}:{hC} index
-- KEYS[2]  sizes    sizes:{p} of its human's partition: the index of that partition's message keys
-- ARGV: godmode_prefix ('' for a message key; for a sessions index 'godmode:{hU}:{hC}:', and the
-- index goes unless one of the session keys it names is indexed)
--
-- Returns the number of keys deleted (0 or 1).

local key, sizes = unpack(KEYS)
local godmode_prefix = unpack(ARGV)

if godmode_prefix == '' then
  if redis.call('HEXISTS', sizes, key) == 1 then return 0 end
else
  for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    if redis.call('HEXISTS', sizes, godmode_prefix .. member) == 1 then return 0 end
  end
end
return redis.call('UNLINK', key)
