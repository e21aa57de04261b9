-- Delete a zone and every key of it; tells its agents on the update channel.
-- KEYS: 1 zone, 2 peers, 3 rev, then every other key of the zone
-- ARGV: 1 force ('1' or '0'), 2 update channel, 3 the zone revision the caller read,
--       4 the zone-deleted update for that revision plus one (built by the caller),
--       5 the publish command (PUBLISH | SPUBLISH)
-- Returns {'ok'} | {'nozone'} | {'busy', node count} | {'moved', revision}: the
-- revision is not the one read (changed since), nothing is deleted
if redis.call('EXISTS', KEYS[1]) == 0 then return {'nozone'} end
local nodes = redis.call('HLEN', KEYS[2])
if nodes > 0 and ARGV[1] ~= '1' then return {'busy', nodes} end
local rev = tonumber(redis.call('GET', KEYS[3]) or '0')
if rev ~= tonumber(ARGV[3]) then return {'moved', rev} end
redis.call('DEL', unpack(KEYS))
redis.call(ARGV[5], ARGV[2], ARGV[4])
return {'ok'}
