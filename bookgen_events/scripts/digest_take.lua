-- A due (leased) digest send takes its window's items into itself (see digests.py), so the
-- items live in the lease from then on: a process killed after this loses nothing, and the
-- next notification opens a new window.
-- KEYS: the channel's scheduled set, the window's collecting list.
-- ARGV: the leased member.
-- Returns the member that now holds the items (the same one if it already did), or false
-- when the member is gone (settled by another consumer).
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return false
end
local send = cjson.decode(ARGV[1])
if send.items then
  return ARGV[1]
end
send.items = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
local taken = cjson.encode(send)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], score, taken)
return taken
