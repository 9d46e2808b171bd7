-- Emit a batch of events, each once per id within the idempotency window: one command and
-- one reply (a pipeline's replies cost redis-py one Python call each, more than the appends).
-- An id seen within the window appends nothing and returns its first stream id ('' while it
-- is still held); an event due later is held (the due-time set and the events by id)
-- instead of appended, and moved to the stream by move_due.lua when due.
-- KEYS: the event stream, the held set, the held events, then one idempotency key per event.
-- ARGV: maxlen, the field name, the window (ms), then per event: id, payload, due (ms, 0: now).
local maxlen, field, window = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ids = {}
local now = nil
local n = 0
for i = 4, #ARGV, 3 do
  n = n + 1
  local key = KEYS[3 + n]
  local first = redis.call('GET', key)
  if first then
    ids[n] = first
  else
    local due = tonumber(ARGV[i + 2])
    if due > 0 and not now then
      local t = redis.call('TIME')
      now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    if due > 0 and due > now then
      redis.call('ZADD', KEYS[2], due, ARGV[i])
      redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
      redis.call('SET', key, '', 'PX', due - now + window)
      ids[n] = ''
    else
      ids[n] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', field, ARGV[i + 1])
      redis.call('SET', key, ids[n], 'PX', window)
    end
  end
end
return ids
