-- Compare-and-set a peer record (endpoint updates); logs an upsert when it changed.
-- KEYS: 1 peers, 2 rev, 3 changes, 4 seen, 5 applied
-- ARGV: 1 public key, 2 expected current record, 3 new record, 4 now, 5 change log length,
--       6 request order or ''
-- Returns {'ok', rev} | {'stale', rev} | {'missing'} | {'retry'}
if is_stale(KEYS[5], ARGV[1], ARGV[6]) then return {'stale', current_rev(KEYS[2])} end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return {'missing'} end
if current ~= ARGV[2] then return {'retry'} end
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
mark_applied(KEYS[5], ARGV[1], ARGV[6])
if ARGV[3] == current then
  return {'ok', current_rev(KEYS[2])}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return {'ok', log_change(KEYS[2], KEYS[3], ARGV[5], 'op', 'upsert', 'peer', ARGV[3])}
