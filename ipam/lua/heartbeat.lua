-- Record that a node is alive.
-- KEYS: 1 peers, 2 seen, 3 the request's nonce key (optional, see `replayed`)
-- ARGV: 1 public key, 2 session, 3 now, 4 and 5 with KEYS[3]: the request's stream entry
--       id, the nonce's lifetime
-- Returns {'ok'} | {'missing'} | {'superseded'} | {'replayed'}
if replayed(KEYS[3], ARGV[4], ARGV[5]) then return {'replayed'} end
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return {'missing'} end
if cjson.decode(record)['session'] ~= ARGV[2] then return {'superseded'} end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return {'ok'}
