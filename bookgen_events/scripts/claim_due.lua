-- Lease up to LIMIT due scheduled deliveries: push their score LEASE ms ahead rather than pop
-- them, so a consumer that dies mid-retry loses nothing. Also returns the next due score.
-- KEYS: the scheduled set. ARGV: now (ms), lease (ms), limit.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local lease = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', lease, member) end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {due, head[2] or false}
