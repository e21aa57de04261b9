-- Create a zone and its request stream's consumer group.
-- KEYS: 1 zone, 2 requests stream
-- ARGV: 1 name, 2 description, 3 cidr, 4 created (unix time), 5 consumer group
-- Returns {'ok'} | {'exists'}
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'description', ARGV[2], 'cidr', ARGV[3],
           'created', ARGV[4])
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[2], ARGV[5], '$', 'MKSTREAM')
end
return {'ok'}
