-- emit_many.lua for the common call in which no event has a deliver_at: each event appended
-- once per id within the idempotency window, nothing held, so neither held key is passed nor
-- a due time per event (fewer arguments for Redis to turn into Lua values on every call).
-- Same answers as emit_many.lua: an id seen within the window appends nothing and returns
-- its first stream id ('' while it is still held).
-- KEYS: the event stream, then one idempotency key per event.
-- ARGV: maxlen, the window (ms), then one payload per event.
local stream, maxlen, window = KEYS[1], ARGV[1], ARGV[2]
local ids = {}
for n = 1, #KEYS - 1 do
  local key = KEYS[n + 1]
  local first = redis.call('GET', key)
  if first then
    ids[n] = first
  else
    local id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', '${field}', ARGV[n + 2])
    redis.call('SET', key, id, 'PX', window)
    ids[n] = id
  end
end
return ids
