-- The zone's changes not yet published, oldest first, as data (reads only).
-- KEYS: 1 changes, 2 published
-- ARGV: 1 most changes to return
-- Returns {published revision, entries}, entries as XRANGE gives them:
-- {{'<rev>-1', {field, value, ...}}, ...} (see log_change in _lib.lua)
local published = tonumber(redis.call('GET', KEYS[2]) or '0')
return {published,
        redis.call('XRANGE', KEYS[1], '(' .. published .. '-1', '+', 'COUNT', ARGV[1])}
