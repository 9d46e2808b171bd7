-- One failed attempt to an endpoint: the failing window it belongs to, and its count.
-- KEYS[1]: the health hash (endpoint id -> {since, count, version} as JSON).
-- ARGV: endpoint id, now (ms), the endpoint's version (its updated_at): a changed endpoint
-- (re-enabled, a new URL) starts a new window.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local state = raw and cjson.decode(raw) or nil
if not state or state.version ~= ARGV[3] then
  state = {since = tonumber(ARGV[2]), count = 0, version = ARGV[3]}
end
state.count = state.count + 1
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(state))
return {state.since, state.count}
