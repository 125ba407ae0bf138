-- admit.lua: one admission over N scopes, checked and reserved atomically (docs/limits.md,
-- "Redis scripts"). The rules are window.rs's, written again in Lua.
--
-- KEYS: for each ask, three keys of its scope: the counters hash, the reservations' expiry
--       sorted set (member: reservation id, score: expiry ms), the reservations' amounts hash
--       (field: reservation id, value: tokens); then the sequence counter.
-- ARGV: now (ms), lease (ms), today (days since the epoch), ms to the next 00:00 UTC;
--       then for each ask: rpm, tpm, tokens_per_day (-1: not limited), tokens to reserve.
-- Reply: {1, reservation id, 0, 0, counters...} when admitted and reserved in every scope;
--        {0, refusing ask (0-based), limit (1 rpm, 2 tpm, 3 tokens_per_day), wait ms,
--        counters...} when refused, with nothing counted or reserved;
--        counters: for each ask, window_start (-1: none), window_requests, window_tokens, day,
--        day_tokens, reserved — after the reservation when admitted.
local WINDOW = 60000
local now = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local today = tonumber(ARGV[3])
local midnight = tonumber(ARGV[4])
local n = (#KEYS - 1) / 3

-- Lua numbers are doubles; '%d' writes them back exactly (up to 2^53) where tostring would
-- switch to exponent notation past 14 digits.
local function int(x)
  return string.format('%d', x)
end

local c = {}
local worst_ask, worst_limit, worst_wait = -1, 0, -1
local function broke(ask, limit, wait)
  if wait > worst_wait then
    worst_ask, worst_limit, worst_wait = ask, limit, wait
  end
end

for i = 1, n do
  local state, expiry, amounts = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local f = redis.call('HMGET', state, 'ws', 'wr', 'wt', 'day', 'dt', 'res')
  local ws = tonumber(f[1] or -1)
  local wr = tonumber(f[2] or 0)
  local wt = tonumber(f[3] or 0)
  local day = tonumber(f[4] or 0)
  local dt = tonumber(f[5] or 0)
  local res = tonumber(f[6] or 0)

  -- Reservations past their lease belong to a replica that died before settling: their
  -- tokens come back now, so a kill -9 leaks nothing past the lease.
  local dead = redis.call('ZRANGEBYSCORE', expiry, '-inf', now)
  if #dead > 0 then
    for _, id in ipairs(dead) do
      local amount = redis.call('HGET', amounts, id)
      if amount then
        res = res - tonumber(amount)
        redis.call('HDEL', amounts, id)
      end
    end
    redis.call('ZREMRANGEBYSCORE', expiry, '-inf', now)
    if res < 0 then res = 0 end
    redis.call('HSET', state, 'res', int(res))
  end

  if ws >= 0 and now >= ws + WINDOW then
    ws, wr, wt = -1, 0, 0
  end
  if day < today then
    day, dt = today, 0
  end

  local base = 4 + 4 * (i - 1)
  local rpm = tonumber(ARGV[base + 1])
  local tpm = tonumber(ARGV[base + 2])
  local tpd = tonumber(ARGV[base + 3])
  local tokens = tonumber(ARGV[base + 4])
  local window_wait = WINDOW
  if ws >= 0 then window_wait = ws + WINDOW - now end
  if rpm >= 0 and wr + 1 > rpm then broke(i - 1, 1, window_wait) end
  if tpm >= 0 and wt + res + tokens > tpm then broke(i - 1, 2, window_wait) end
  if tpd >= 0 and dt + res + tokens > tpd then broke(i - 1, 3, midnight) end
  c[i] = {ws, wr, wt, day, dt, res, tokens}
end

local out
if worst_ask >= 0 then
  out = {0, worst_ask, worst_limit, worst_wait}
else
  local id = redis.call('INCR', KEYS[#KEYS])
  out = {1, id, 0, 0}
  for i = 1, n do
    local state, expiry, amounts = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
    local x = c[i]
    if x[1] < 0 then x[1] = now end
    x[2] = x[2] + 1
    x[6] = x[6] + x[7]
    redis.call('HSET', state, 'ws', int(x[1]), 'wr', int(x[2]), 'wt', int(x[3]),
      'day', int(x[4]), 'dt', int(x[5]), 'res', int(x[6]))
    redis.call('ZADD', expiry, int(now + lease), id)
    redis.call('HSET', amounts, id, int(x[7]))
    -- Idle scopes vanish once nothing in them matters: past the window, the day and every
    -- reservation's lease (relative, so a caller's clock never sets a date in Redis's past).
    local keep = math.max(x[1] + WINDOW - now, midnight, lease) + WINDOW
    redis.call('PEXPIRE', state, int(keep))
    redis.call('PEXPIRE', expiry, int(keep))
    redis.call('PEXPIRE', amounts, int(keep))
  end
end
for i = 1, n do
  for j = 1, 6 do
    out[#out + 1] = c[i][j]
  end
end
return out
