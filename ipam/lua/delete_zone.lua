-- Delete a zone and every key of it; tells its agents on the update channel.
-- KEYS: 1 zone, 2 peers, 3 rev, then every other key of the zone
-- ARGV: 1 force ('1' or '0'), 2 update channel, 3 zone name
-- Returns {'ok'} | {'missing'} | {'busy', node count}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local nodes = redis.call('HLEN', KEYS[2])
if nodes > 0 and ARGV[1] ~= '1' then return {'busy', nodes} end
local rev = tonumber(redis.call('GET', KEYS[3]) or '0') + 1
redis.call('DEL', unpack(KEYS))
redis.call('PUBLISH', ARGV[2], '{"v":1,"zone":"' .. ARGV[3] .. '","since":' .. (rev - 1) ..
  ',"rev":' .. rev .. ',"changes":[{"rev":' .. rev .. ',"op":"zone-deleted"}]}')
return {'ok'}
