-- Record that a node is alive.
-- KEYS: 1 peers, 2 seen
-- ARGV: 1 public key, 2 session, 3 now
-- Returns {'ok'} | {'missing'} | {'superseded'}
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return {'missing'} end
if cjson.decode(record)['session'] ~= ARGV[2] then return {'superseded'} end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return {'ok'}
