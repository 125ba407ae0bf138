-- begin.lua: looks an idempotency key up, claiming it when free (docs/limits.md).
-- KEYS[1]: the key's entry hash; KEYS[2]: the sequence counter.
-- ARGV: request fingerprint, now (ms), hold (ms a claim may stay in flight).
-- Reply: {'claimed', token} | {'inflight'} | {'mismatch'} | {'done', status, headers, body}.
local now = tonumber(ARGV[2])
local hold = tonumber(ARGV[3])
local e = redis.call('HMGET', KEYS[1], 'st', 'fp', 'exp', 'status', 'headers', 'body')
if e[1] and tonumber(e[3]) > now then
  if e[2] ~= ARGV[1] then return {'mismatch'} end
  if e[1] == 'busy' then return {'inflight'} end
  return {'done', e[4], e[5], e[6]}
end
local token = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'st', 'busy', 'fp', ARGV[1], 'tok', token,
  'exp', string.format('%d', now + hold))
-- Redis forgets the entry a minute after it stops counting; the 'exp' field is what counts,
-- judged by the callers' clock like every other window.
redis.call('PEXPIRE', KEYS[1], string.format('%d', hold + 60000))
return {'claimed', token}
