-- Count notifications against their recipients' sliding windows, or refuse them: a batch of
-- items in one call, each checked and counted in turn (so two items of one recipient in a
-- batch count against each other exactly as two calls would).
-- An item is allowed (1, and counted in each of its windows) unless a window is full (0, and
-- not counted). A member already in a window (a retry of a notification already counted)
-- is allowed and not counted again.
-- KEYS: each item's window keys, item after item. ARGV: now (ms), then per item: member
-- (the event id), its number of windows n, then n pairs (window length in ms, limit; a limit
-- of 0 disables that window).
local now = tonumber(ARGV[1])
local verdicts = {}
local a, k = 2, 0
while a <= #ARGV do
  local member, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  local lengths, limits = {}, {}
  for i = 1, n do
    lengths[i], limits[i] = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    a = a + 2
  end
  local verdict, counted = 1, false
  for i = 1, n do
    if limits[i] > 0 and redis.call('ZSCORE', KEYS[k + i], member) then counted = true break end
  end
  if not counted then
    for i = 1, n do
      if limits[i] > 0 then
        redis.call('ZREMRANGEBYSCORE', KEYS[k + i], '-inf', now - lengths[i])
        if redis.call('ZCARD', KEYS[k + i]) >= limits[i] then verdict = 0 break end
      end
    end
    if verdict == 1 then
      for i = 1, n do
        if limits[i] > 0 then
          redis.call('ZADD', KEYS[k + i], now, member)
          redis.call('PEXPIRE', KEYS[k + i], lengths[i])
        end
      end
    end
  end
  k = k + n
  verdicts[#verdicts + 1] = verdict
end
return verdicts
