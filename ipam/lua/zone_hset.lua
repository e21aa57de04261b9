-- Write fields of a zone's hash, or of another hash of the zone (its auth hash, its join
-- keys), only while the zone exists: a change racing the zone's deletion must not leave
-- behind a hash of a zone that is gone (a zone hash holding one setting, a join key that a
-- zone created later under the same name would accept).
-- KEYS: 1 zone, 2 the hash to write
-- ARGV: 1 'set' | 'setnx' (only fields the hash does not hold yet), then field, value
--       pairs; with 'set' an empty value deletes the field
-- Returns 1 | 0 (no such zone: nothing written) | -1 ('setnx': a field exists already)
if redis.call('HEXISTS', KEYS[1], 'cidr') == 0 then return 0 end
if ARGV[1] == 'setnx' then
  for i = 2, #ARGV, 2 do
    if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1 then return -1 end
  end
end
for i = 2, #ARGV, 2 do
  if ARGV[i + 1] == '' and ARGV[1] == 'set' then
    redis.call('HDEL', KEYS[2], ARGV[i])
  else
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
return 1
