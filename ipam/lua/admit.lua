-- Admit one request the gate has checked into the zone's request stream, once: every
-- tower replica hears every request, the first to admit it wins.
-- KEYS: 1 the request's nonce key, 2 the zone's request stream
-- ARGV: 1 the nonce's lifetime (seconds), 2 the request JSON, 3 its MAC
-- Returns the stream entry id | false (admitted already, or replayed) | {'nozone'}
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local id = redis.call('XADD', KEYS[2], 'NOMKSTREAM', '*', 'm', ARGV[2], 'mac', ARGV[3])
if not id then return {'nozone'} end
-- The nonce keeps the entry id: the worker's replay guard then knows this entry as its own.
redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
return id
