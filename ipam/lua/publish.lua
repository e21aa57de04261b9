-- Publish a zone's updates, built by the tower from what pending.lua returned, unless
-- anything was published since that read (compare and set on the published revision):
-- replicas publishing one zone never publish a change twice or out of order.
-- KEYS: 1 published
-- ARGV: 1 update channel, 2 the published revision pending.lua returned,
--       3 the publish command: PUBLISH, or SPUBLISH on a Redis Cluster (the channel is
--       in the zone's slot, as a script there requires),
--       then for each update in order: the revision it ends at, its message
-- Returns {'ok', messages published} | {'moved', published revision}
local published = tonumber(redis.call('GET', KEYS[1]) or '0')
if published ~= tonumber(ARGV[2]) then return {'moved', published} end
local last = nil
for i = 4, #ARGV, 2 do
  redis.call(ARGV[3], ARGV[1], ARGV[i + 1])
  last = ARGV[i]
end
if last then redis.call('SET', KEYS[1], last) end
return {'ok', (#ARGV - 3) / 2}
