-- Cancel a held event: 1 when it was held (now removed, its id free again), -1 when it was
-- already appended (its idempotency key holds a stream id), 0 when it is unknown.
-- KEYS: the held set, the held events, the id's idempotency key. ARGV: the event id.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('DEL', KEYS[3])
  return 1
end
local first = redis.call('GET', KEYS[3])
if first and first ~= '' then return -1 end
return 0
