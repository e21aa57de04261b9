-- Copy the tower's public key into a zone's slot (an agent on a Redis Cluster reads every
-- key of its zone on one shard), only while the zone exists: a copy racing the zone's
-- deletion must not leave a key of a zone that is gone.
-- KEYS: 1 zone, 2 the zone's copy of the tower key
-- ARGV: 1 the tower's public key
-- Returns 1 | 0 (no such zone: nothing written)
if redis.call('HEXISTS', KEYS[1], 'cidr') == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
return 1
