-- Publish every logged change not yet published, in revision order, as few messages.
-- Atomic, so replicas flushing the same zone never publish a range twice or out of order.
-- KEYS: 1 changes, 2 published
-- ARGV: 1 update channel, 2 zone name, 3 max changes per message
-- Returns the number of messages published.
local published = tonumber(redis.call('GET', KEYS[2]) or '0')
local messages = 0
while true do
  local entries = redis.call('XRANGE', KEYS[1], '(' .. published .. '-1', '+', 'COUNT', ARGV[3])
  if #entries == 0 then break end
  local changes = {}
  for i, entry in ipairs(entries) do changes[i] = entry[2][2] end
  local first = tonumber(string.match(entries[1][1], '^(%d+)'))
  local last = tonumber(string.match(entries[#entries][1], '^(%d+)'))
  redis.call('PUBLISH', ARGV[1], '{"v":1,"zone":"' .. ARGV[2] .. '","since":' .. (first - 1) ..
    ',"rev":' .. last .. ',"changes":[' .. table.concat(changes, ',') .. ']}')
  published = last
  messages = messages + 1
end
redis.call('SET', KEYS[2], published)
return messages
