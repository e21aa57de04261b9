-- Shared helpers, prepended to every script by ipam/scripts.py.

-- Bump the zone revision and append one change to the bounded change log, as data:
-- field/value pairs, 'op', 'upsert', 'peer', <record> or 'op', 'remove', 'key', <key>,
-- 'reason', <reason>. The tower builds the protocol's messages from them when it
-- publishes (see pending.lua and publish.lua).
local function log_change(rev_key, changes_key, maxlen, ...)
  local rev = redis.call('INCR', rev_key)
  redis.call('XADD', changes_key, 'MAXLEN', '~', maxlen, rev .. '-1', ...)
  return rev
end

-- Delete every child prefix owned by `key`; returns nothing.
local function drop_prefixes(prefixes_key, key, keep)
  local all = redis.call('HGETALL', prefixes_key)
  for i = 1, #all, 2 do
    local owner = cjson.decode(all[i + 1])[1]
    if owner == key and not (keep and keep[all[i]]) then
      redis.call('HDEL', prefixes_key, all[i])
    end
  end
end

-- Remove one peer record and everything it holds; logs a remove change.
local function drop_peer(k, key, record, reason, maxlen)
  local addr = cjson.decode(record)['address']
  redis.call('HDEL', k.peers, key)
  if redis.call('HGET', k.leases, addr) == key then
    redis.call('HDEL', k.leases, addr)
    redis.call('SADD', k.free, addr)
  end
  redis.call('ZREM', k.seen, key)
  drop_prefixes(k.prefixes, key, nil)
  return log_change(k.rev, k.changes, maxlen, 'op', 'remove', 'key', key, 'reason', reason)
end

-- Requests carry their order (a number made of their request-stream entry id, see
-- ipam/store.py order_score); `applied` (a sorted set: key -> order of the last request
-- applied for that key) lets a request handled again after a replica died (claimed and
-- redelivered) be recognised as older than one applied since, and be ignored.
local function is_stale(applied_key, key, order)
  if not applied_key or order == nil or order == '' then return false end
  local last = redis.call('ZSCORE', applied_key, key)
  return last ~= false and tonumber(last) > tonumber(order)
end

local function mark_applied(applied_key, key, order)
  if applied_key and order ~= nil and order ~= '' then
    redis.call('ZADD', applied_key, 'GT', order, key)
  end
end

-- The replay guard of a request from the request stream, checked by the script that
-- acts on it: the nonce key keeps the stream entry id of the first request that used the
-- nonce, for `ttl` seconds; another entry with that nonce is a replay (the same entry
-- handled again, claimed after a replica died or run again for a next step, is not).
-- No key: the request is not from the stream (REST, tools).
local function replayed(nonce_key, entry_id, ttl)
  if not nonce_key then return false end
  local holder = redis.call('SET', nonce_key, entry_id, 'NX', 'GET', 'EX', ttl)
  return holder ~= false and holder ~= entry_id
end

local function current_rev(rev_key)
  return tonumber(redis.call('GET', rev_key) or '0')
end
