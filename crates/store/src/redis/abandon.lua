-- abandon.lua: frees a key still held in flight by this claim (docs/limits.md).
-- KEYS[1]: the key's entry hash. ARGV[1]: claim token. Reply: 1 when freed, else 0.
local e = redis.call('HMGET', KEYS[1], 'st', 'tok')
if e[1] ~= 'busy' or e[2] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
