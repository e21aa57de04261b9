-- Enroll a node: check the credential it came with, count the use, give the node a
-- unique name and write its registry record, atomically. The node's Redis user is made
-- by the caller afterwards (ACL commands cannot run in a script).
-- KEYS: 1 zone, 2 auth, 3 joinkeys, 4 nodes, 5 names, 6 the node's tombstone,
--       7 ephemeral (public key -> seconds offline before removal),
--       8 expiring (public key -> when its credential expires)
-- ARGV: 1 credential id (join key id, or 'zone' for the zone secret), 2 node id,
--       3 public key, 4 credential sha256, 5 wanted name, 6 now (unix seconds),
--       7 Redis user name
-- Returns {'ok', name, record JSON} | {'nozone'} | {'off'} | {'unknown'} | {'revoked'}
--       | {'expired', at} | {'used', uses, max} | {'removed', at, reason} | {'names'}
local k = {zone = KEYS[1], auth = KEYS[2], joinkeys = KEYS[3], nodes = KEYS[4],
           names = KEYS[5], gone = KEYS[6], ephemeral = KEYS[7], expiring = KEYS[8]}
local cred, node, key, sha, wanted, now, user =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]

if redis.call('HEXISTS', k.zone, 'cidr') == 0 then return {'nozone'} end

-- 1. The credential.
local issued, jk = 0, nil
if cred == 'zone' then
  if redis.call('HGET', k.zone, 'zone_secret') == 'off' then return {'off'} end
  issued = tonumber(redis.call('HGET', k.auth, 'zone_secret_at') or '0')
else
  local raw = redis.call('HGET', k.joinkeys, cred)
  if not raw then return {'unknown'} end
  jk = cjson.decode(raw)
  if jk['revoked'] then return {'revoked'} end
  if jk['expires'] and tonumber(jk['expires']) <= now then
    return {'expired', tostring(jk['expires'])}
  end
  local max = tonumber(jk['max_uses'] or 0)
  if max > 0 and tonumber(jk['uses'] or 0) >= max then
    return {'used', tostring(jk['uses']), tostring(max)}
  end
  issued = tonumber(jk['created'])
end

-- 2. A node removed by an operator comes back only with a credential issued after that.
local gone = redis.call('GET', k.gone)
if gone then
  local g = cjson.decode(gone)
  if g['sticky'] and tonumber(g['at']) >= issued then
    return {'removed', tostring(g['at']), g['reason']}
  end
end

-- 3. A unique name (its own name again when it enrolls anew).
local old = redis.call('HGET', k.nodes, node)
local previous = old and cjson.decode(old) or nil
local name = nil
for n = 1, 1000 do
  local candidate = wanted
  if n > 1 then
    local suffix = '-' .. n
    candidate = string.sub(wanted, 1, 63 - #suffix):gsub('-+$', '') .. suffix
  end
  local holder = redis.call('HGET', k.names, candidate)
  if not holder or holder == node then name = candidate break end
end
if not name then return {'names'} end
if previous and previous['name'] and previous['name'] ~= name
    and redis.call('HGET', k.names, previous['name']) == node then
  redis.call('HDEL', k.names, previous['name'])
end
redis.call('HSET', k.names, name, node)

-- 4. Count the use, write the record.
if jk then
  jk['uses'] = tonumber(jk['uses'] or 0) + 1
  redis.call('HSET', k.joinkeys, cred, cjson.encode(jk))
end
local expiry = tonumber(redis.call('HGET', k.zone, 'key_expiry') or '')
local record = {
  key = key, name = name, user = user, cred = sha, join_key = cred, enrolled = now,
  expires = expiry and (now + expiry) or false,
  tags = jk and jk['tags'] or {}, routes = jk and jk['routes'] or {},
  approved = previous and not previous['removed'] and previous['approved'] or {},
  ephemeral = jk and jk['ephemeral'] and tonumber(jk['ephemeral_after']) or false,
}
local encoded = cjson.encode(record)
redis.call('HSET', k.nodes, node, encoded)
redis.call('DEL', k.gone)
if record['ephemeral'] then
  redis.call('ZADD', k.ephemeral, record['ephemeral'], key)
else
  redis.call('ZREM', k.ephemeral, key)
end
if record['expires'] then
  redis.call('ZADD', k.expiring, record['expires'], key)
else
  redis.call('ZREM', k.expiring, key)
end
return {'ok', name, encoded}
