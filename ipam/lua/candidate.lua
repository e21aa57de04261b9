-- Next address candidate for a new node: a released address, else the next offset.
-- KEYS: 1 free set, 2 cursor
-- ARGV: 1 pool size (highest usable offset)
-- Returns {'a', address} | {'o', offset} | {'full'}
local released = redis.call('SPOP', KEYS[1])
if released then return {'a', released} end
local cursor = tonumber(redis.call('GET', KEYS[2]) or '0')
if cursor >= tonumber(ARGV[1]) then return {'full'} end
return {'o', redis.call('INCR', KEYS[2])}
