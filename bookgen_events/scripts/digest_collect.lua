-- A notification joins its digest window (see digests.py).
-- KEYS: the window's collecting list, the channel's scheduled set (one slot: same tag).
-- ARGV: the item, the window's close (ms), the send to schedule when the window opens, the
--       list's lifetime (ms; a safety net, the send empties it).
-- Returns how many items the list holds now.
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if n == 1 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
end
return n
