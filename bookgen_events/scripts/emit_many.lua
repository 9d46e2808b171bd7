-- Append a batch of events: one command and one reply, where redis-py would read a
-- pipeline's replies one Python call each, which costs more than the appends.
-- KEYS: the event stream. ARGV: maxlen, the field name, then one payload per event.
local ids = {}
for i = 3, #ARGV do
  ids[i - 2] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', ARGV[2], ARGV[i])
end
return ids
