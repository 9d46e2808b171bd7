-- Count one notification against a recipient's per-minute and per-hour windows, or refuse it.
-- Returns 1 when allowed (and counted), 0 when over a limit (not counted). A member already
-- in a window (a retry of a notification already counted) is allowed and not counted again.
-- KEYS: the minute and hour windows. ARGV: now (ms), member (the event id), the per-minute
-- and per-hour limits (0 disables a window).
local now = tonumber(ARGV[1])
local member = ARGV[2]
local limits = {tonumber(ARGV[3]), tonumber(ARGV[4])}
local windows = {60000, 3600000}
for i = 1, 2 do
  if limits[i] > 0 and redis.call('ZSCORE', KEYS[i], member) then return 1 end
end
for i = 1, 2 do
  if limits[i] > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - windows[i])
    if redis.call('ZCARD', KEYS[i]) >= limits[i] then return 0 end
  end
end
for i = 1, 2 do
  if limits[i] > 0 then
    redis.call('ZADD', KEYS[i], now, member)
    redis.call('PEXPIRE', KEYS[i], windows[i])
  end
end
return 1
