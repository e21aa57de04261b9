-- Create a zone and its request stream's consumer group, with its zone secret's digest.
-- KEYS: 1 zone, 2 requests stream, 3 auth, 4 joinkeys, 5 nodes, 6 names, 7 ephemeral,
--       8 expiring, 9 paths, 10 fwstate, 11 policy, 12 the zone's copy of the tower's
--       public key
-- ARGV: 1 name, 2 description, 3 cidr, 4 created (unix time), 5 consumer group,
--       6 the tower's public key ('': no tower has started yet),
--       7.. field, value pairs of the auth hash (the zone secret's digest and time: the
--       zone is never without its secret)
-- Returns {'ok'} | {'exists'}. A zone hash without 'cidr' is no zone, and identity,
-- path and policy keys without a zone are leftovers of a deleted one (written by a
-- change that raced its deletion): both are replaced, so a new zone starts with no join
-- key, node, path report, policy or rule state.
if redis.call('HEXISTS', KEYS[1], 'cidr') == 1 then return {'exists'} end
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9],
           KEYS[10], KEYS[11])
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'description', ARGV[2], 'cidr', ARGV[3],
           'created', ARGV[4])
if ARGV[6] ~= '' then redis.call('SET', KEYS[12], ARGV[6]) end
if #ARGV > 6 then redis.call('HSET', KEYS[3], unpack(ARGV, 7)) end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[2], ARGV[5], '$', 'MKSTREAM')
end
return {'ok'}
