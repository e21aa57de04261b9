-- Undo an enrollment whose Redis user could not be made (the tower answered 'unavailable'
-- and the node will try again): its record, name and timers go, and a join key gets its
-- use back, so a one-off key survives a failed attempt.
-- KEYS: 1 joinkeys, 2 nodes, 3 names, 4 ephemeral, 5 expiring
-- ARGV: 1 credential id (join key id, or 'zone'), 2 node id, 3 public key
-- Returns 1 when a record was undone, 0 when there was none.
local k = {joinkeys = KEYS[1], nodes = KEYS[2], names = KEYS[3], ephemeral = KEYS[4],
           expiring = KEYS[5]}
local cred, node, key = ARGV[1], ARGV[2], ARGV[3]

local raw = redis.call('HGET', k.nodes, node)
if not raw then return 0 end
local record = cjson.decode(raw)
redis.call('HDEL', k.nodes, node)
if record['name'] and redis.call('HGET', k.names, record['name']) == node then
  redis.call('HDEL', k.names, record['name'])
end
redis.call('ZREM', k.ephemeral, key)
redis.call('ZREM', k.expiring, key)
if cred ~= 'zone' then
  local jk = redis.call('HGET', k.joinkeys, cred)
  if jk then
    local decoded = cjson.decode(jk)
    decoded['uses'] = math.max(0, tonumber(decoded['uses'] or 0) - 1)
    redis.call('HSET', k.joinkeys, cred, cjson.encode(decoded))
  end
end
return 1
