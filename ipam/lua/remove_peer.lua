-- Remove a node: peer record, lease (back to the pool), prefixes, last-seen, the state
-- of its policy rules.
-- KEYS: 1 peers, 2 leases, 3 prefixes, 4 free, 5 rev, 6 changes, 7 seen, 8 applied,
--       9 fwstate, 10 the request's nonce key (optional, see `replayed`)
-- ARGV: 1 public key, 2 reason, 3 session that must match or '',
--       4 remove only if last seen is older than this or '', 5 change log length,
--       6 request order or '', 7 and 8 with KEYS[10]: the request's stream
--       entry id, the nonce's lifetime
-- Returns {'ok', rev} | {'stale', rev} | {'missing'} | {'superseded'} | {'alive'}
--       | {'replayed'}
local k = {peers = KEYS[1], leases = KEYS[2], prefixes = KEYS[3], free = KEYS[4],
           rev = KEYS[5], changes = KEYS[6], seen = KEYS[7], applied = KEYS[8]}
local key, order = ARGV[1], ARGV[6]
if replayed(KEYS[10], ARGV[7], ARGV[8]) then return {'replayed'} end
if is_stale(k.applied, key, order) then return {'stale', current_rev(k.rev)} end
local record = redis.call('HGET', k.peers, key)
if not record then return {'missing'} end
if ARGV[3] ~= '' and cjson.decode(record)['session'] ~= ARGV[3] then return {'superseded'} end
if ARGV[4] ~= '' then
  local seen = tonumber(redis.call('ZSCORE', k.seen, key) or '0')
  if seen >= tonumber(ARGV[4]) then return {'alive'} end
end
local rev = drop_peer(k, key, record, ARGV[2], ARGV[5])
redis.call('HDEL', KEYS[9], key)
mark_applied(k.applied, key, order)
return {'ok', rev}
