-- Compare-and-set a peer record (endpoint updates); logs an upsert when it changed.
-- KEYS: 1 peers, 2 rev, 3 changes, 4 seen
-- ARGV: 1 public key, 2 expected current record, 3 new record, 4 now, 5 change log length
-- Returns {'ok', rev} | {'missing'} | {'retry'}
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return {'missing'} end
if current ~= ARGV[2] then return {'retry'} end
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
if ARGV[3] == current then
  return {'ok', tonumber(redis.call('GET', KEYS[2]) or '0')}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return {'ok', log_change(KEYS[2], KEYS[3], ARGV[5], '"op":"upsert","peer":' .. ARGV[3])}
