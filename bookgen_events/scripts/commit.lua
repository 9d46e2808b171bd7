-- What one flush writes, atomically like MULTI/EXEC but one command and one reply (redis-py
-- parses a +QUEUED reply per command of a transaction in Python, which costs more than the
-- writes): outcomes, dead letters, schedule changes, then the acks. See commit.py.
--
-- KEYS: deliveries, dlq, scheduled, the stream acked.
-- ARGV: group, maxlen, then five sections, each a count followed by its items:
--   outcomes, one record each (outcomes.OutcomeRecord: the values of the fields below, each
--     ended by the unit separator, or a JSON array of them);
--   dead letters as (n, field, value, ...);
--   members to unschedule; (score, member) pairs to schedule; entry ids to ack.

-- Filled at load from bookgen_events.outcomes, the record's one definition: its field names
-- in order, and how many lead (written always; the others only when not empty).
local names = {${outcome_fields}}
local width, always = #names, ${outcome_always}

local find, sub = string.find, string.sub
local i = 3
local count = tonumber(ARGV[i])
i = i + 1
for _ = 1, count do
  local record, args, n, pos = ARGV[i], {}, 0, 1
  local values = string.byte(record, 1) == 91 and cjson.decode(record)  -- '[': JSON array
  for j = 1, width do
    local v
    if values then
      v = values[j]
    else  -- each value ends with the unit separator (31)
      local stop = find(record, '\31', pos, true)
      v = sub(record, pos, stop - 1)
      pos = stop + 1
    end
    if j <= always or v ~= '' then
      args[n + 1] = names[j]
      args[n + 2] = v
      n = n + 2
    end
  end
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(args))
  i = i + 1
end
count = tonumber(ARGV[i])
i = i + 1
for _ = 1, count do
  local n = tonumber(ARGV[i])
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
local n = tonumber(ARGV[i])
i = i + 1
for _ = 1, n do redis.call('ZREM', KEYS[3], ARGV[i]); i = i + 1 end
n = tonumber(ARGV[i])
i = i + 1
for _ = 1, n do redis.call('ZADD', KEYS[3], ARGV[i], ARGV[i + 1]); i = i + 2 end
n = tonumber(ARGV[i])
i = i + 1
local acked = 0
while n > 0 do
  local chunk = math.min(n, 5000)
  acked = acked + redis.call('XACK', KEYS[4], ARGV[1], unpack(ARGV, i, i + chunk - 1))
  i = i + chunk
  n = n - chunk
end
return acked
