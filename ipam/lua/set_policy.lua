-- Set (or delete) a zone's access policy and log it as one change, in one step.
-- KEYS: 1 zone, 2 policy, 3 rev, 4 changes
-- ARGV: 1 the canonical document (JSON; '' deletes), 2 change log length
-- Returns {'ok', rev} (rev: the zone revision of the change; the current revision
-- when nothing changed: the same document again, or no policy to delete) | {'nozone'}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'nozone'} end
if ARGV[1] == '' then
  if redis.call('EXISTS', KEYS[2]) == 0 then return {'ok', current_rev(KEYS[3])} end
  redis.call('DEL', KEYS[2])
  return {'ok', log_change(KEYS[3], KEYS[4], ARGV[2], 'op', 'policy', 'policy', '')}
end
local current = redis.call('GET', KEYS[2])
if current and string.match(current, '^{"rev":%d+,"policy":(.*)}$') == ARGV[1] then
  return {'ok', current_rev(KEYS[3])}          -- the same document again: no change
end
local rev = log_change(KEYS[3], KEYS[4], ARGV[2], 'op', 'policy', 'policy', ARGV[1])
redis.call('SET', KEYS[2], '{"rev":' .. rev .. ',"policy":' .. ARGV[1] .. '}')
return {'ok', rev}
