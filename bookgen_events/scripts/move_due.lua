-- Move held events that are due to the event stream: for each id, remove it from the held
-- set and events, append its event with its own id and record its stream id for the
-- idempotency window, all in this one script, so an event is never moved twice nor lost
-- with the process that asked. Ids moved meanwhile by another process are skipped; the
-- first id not yet due (by Redis's clock) ends the run, as the ids come in due order.
-- KEYS: the event stream, the held set, the held events, then the idempotency key per id.
-- ARGV: maxlen, the field name, the window (ms), then the ids (the head of the held set).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[3])
local moved = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local due = redis.call('ZSCORE', KEYS[2], id)
  if due then
    if tonumber(due) > now then break end
    local payload = redis.call('HGET', KEYS[3], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    if payload then
      local stream_id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', ARGV[2], payload)
      redis.call('SET', KEYS[i], stream_id, 'PX', window)
      moved[#moved + 1] = stream_id
    end
  end
end
return moved
