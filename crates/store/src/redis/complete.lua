-- complete.lua: stores the answer of the claim holding the key (docs/limits.md).
-- KEYS[1]: the key's entry hash.
-- ARGV: claim token, now (ms), ttl (ms), status, headers (JSON), body.
-- Reply: 1 when stored; 0 when the claim no longer holds the key.
local e = redis.call('HMGET', KEYS[1], 'st', 'tok')
if e[1] ~= 'busy' or e[2] ~= ARGV[1] then return 0 end
local now = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'st', 'done', 'exp', string.format('%d', now + ttl),
  'status', ARGV[4], 'headers', ARGV[5], 'body', ARGV[6])
redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl + 60000))
return 1
