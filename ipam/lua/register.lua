-- Register (or re-register) a node: address, child prefixes and peer record, atomically.
-- KEYS: 1 zone, 2 peers, 3 leases, 4 prefixes, 5 free, 6 rev, 7 changes, 8 seen,
--       9 cursor, 10 applied, 11 the node's tombstone (a removed node cannot register),
--       12 the request's nonce key (optional, see `replayed`)
-- ARGV: 1 public key, 2 and 3 the peer record before and after its address (built by
--       wire/messages.py peer_record_parts: the record is ARGV[2] .. address .. ARGV[3]),
--       4 now, 5 expiry seconds, 6 requested address or '', 7 candidate address or '',
--       8 child prefixes JSON [[prefix, first hex, last hex], ...], 9 change log length,
--       10 request order or '', 11 IPv4 zone: its network address as an integer, so the
--       script takes a new address from the pool itself; '' (IPv6): the caller passes
--       a candidate (answer 'need'), 12 pool size (highest usable host offset),
--       13 the zone's `created` the caller computed with (a zone deleted and created
--       again under the same name has another: answer 'changed'),
--       14 and 15 with KEYS[12]: the request's stream entry id, the nonce's lifetime
-- Returns {'ok', address, rev} | {'stale', current address or '', rev} | {'nozone'}
--       | {'changed'} | {'replayed'} | {'removed'}
--       | {'need'} | {'retry'} | {'full'}
--       | {'held', holder key, last seen} | {'prefix', wanted, held, holder key}
local k = {zone = KEYS[1], peers = KEYS[2], leases = KEYS[3], prefixes = KEYS[4],
           free = KEYS[5], rev = KEYS[6], changes = KEYS[7], seen = KEYS[8],
           cursor = KEYS[9], applied = KEYS[10]}
local key, before, after = ARGV[1], ARGV[2], ARGV[3]
local now, expiry = tonumber(ARGV[4]), tonumber(ARGV[5])
local requested, candidate, maxlen, order = ARGV[6], ARGV[7], ARGV[9], ARGV[10]
local base, pool = tonumber(ARGV[11]), tonumber(ARGV[12])
local wanted = cjson.decode(ARGV[8])

if replayed(KEYS[12], ARGV[14], ARGV[15]) then return {'replayed'} end
local created = redis.call('HGET', k.zone, 'created')
if not created then return {'nozone'} end
if created ~= ARGV[13] then return {'changed'} end
if redis.call('EXISTS', KEYS[11]) == 1 then return {'removed'} end

local old = redis.call('HGET', k.peers, key)
local old_addr = old and cjson.decode(old)['address'] or nil

-- A request older than one already applied for this key changes nothing.
if is_stale(k.applied, key, order) then
  return {'stale', old_addr or '', current_rev(k.rev)}
end

local function ipv4(n)
  return string.format('%d.%d.%d.%d', math.floor(n / 16777216) % 256,
                       math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end

-- A new address: a released one, else the next offset; skips leased ones (requested
-- addresses above the cursor). nil when the pool is used up, false after 64 leased.
local function take_address()
  for _ = 1, 64 do
    local addr = redis.call('SPOP', k.free)
    if not addr then
      if tonumber(redis.call('GET', k.cursor) or '0') >= pool then return nil end
      addr = ipv4(base + redis.call('INCR', k.cursor))
    end
    if redis.call('HEXISTS', k.leases, addr) == 0 then return addr end
  end
  return false
end

-- 1. Decide the address; nothing is written before every check has passed.
local addr, evict = nil, nil
if requested ~= '' then
  addr = requested
  local holder = redis.call('HGET', k.leases, addr)
  if holder and holder ~= key then
    local seen = tonumber(redis.call('ZSCORE', k.seen, holder) or '0')
    if seen >= now - expiry then return {'held', holder, tostring(seen)} end
    evict = holder
  end
elseif old_addr then
  addr = old_addr
elseif candidate ~= '' then
  addr = candidate
  if redis.call('HEXISTS', k.leases, addr) == 1 then return {'retry'} end
elseif not base then
  return {'need'}
elseif redis.call('SCARD', k.free) == 0
    and tonumber(redis.call('GET', k.cursor) or '0') >= pool then
  return {'full'}
end

-- 2. Child prefixes may not overlap another node's (an evicted holder's do not count).
local mine = {}
if #wanted > 0 then
  local all = redis.call('HGETALL', k.prefixes)
  for i = 1, #all, 2 do
    local held = cjson.decode(all[i + 1])
    if held[1] ~= key and held[1] ~= evict then
      for _, w in ipairs(wanted) do
        if w[2] <= held[3] and held[2] <= w[3] then
          if candidate ~= '' and redis.call('HEXISTS', k.leases, candidate) == 0 then
            redis.call('SADD', k.free, candidate)  -- refused: the candidate goes back
          end
          return {'prefix', w[1], all[i], held[1]}
        end
      end
    end
  end
end
for _, w in ipairs(wanted) do mine[w[1]] = true end

-- 3. A new node takes its address from the pool only now that it passed every check.
if not addr then
  addr = take_address()
  if addr == nil then return {'full'} end
  if addr == false then return {'retry'} end
end

-- 4. Write.
if evict then
  drop_peer(k, evict, redis.call('HGET', k.peers, evict), 'evicted', maxlen)
end
if old_addr and old_addr ~= addr then
  redis.call('HDEL', k.leases, old_addr)
  redis.call('SADD', k.free, old_addr)
end
if candidate ~= '' and candidate ~= addr and redis.call('HEXISTS', k.leases, candidate) == 0 then
  redis.call('SADD', k.free, candidate)
end
redis.call('HSET', k.leases, addr, key)
redis.call('SREM', k.free, addr)
drop_prefixes(k.prefixes, key, mine)
for _, w in ipairs(wanted) do
  redis.call('HSET', k.prefixes, w[1], cjson.encode({key, w[2], w[3]}))
end
redis.call('ZADD', k.seen, now, key)
mark_applied(k.applied, key, order)

local record = before .. addr .. after
local rev = current_rev(k.rev)
if record ~= old then
  redis.call('HSET', k.peers, key, record)
  rev = log_change(k.rev, k.changes, maxlen, 'op', 'upsert', 'peer', record)
end
return {'ok', addr, rev}
