-- Mark an enrolled node removed: free its name, keep its record (the credential's
-- digest, for its tombstone user) marked removed, and write its tombstone.
-- KEYS: 1 nodes, 2 names, 3 the node's tombstone, 4 ephemeral, 5 expiring
-- ARGV: 1 node id, 2 tombstone JSON {reason, at, sticky}, 3 tombstone lifetime (seconds)
-- Returns {'ok', record JSON} | {'missing'}
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {'missing'} end
local record = cjson.decode(raw)
if record['name'] and redis.call('HGET', KEYS[2], record['name']) == ARGV[1] then
  redis.call('HDEL', KEYS[2], record['name'])
end
record['removed'] = cjson.decode(ARGV[2])
local encoded = cjson.encode(record)
redis.call('HSET', KEYS[1], ARGV[1], encoded)
redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[3])
redis.call('ZREM', KEYS[4], record['key'])
redis.call('ZREM', KEYS[5], record['key'])
return {'ok', encoded}
