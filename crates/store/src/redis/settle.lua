-- settle.lua: a batch of settlements and releases, applied atomically (docs/limits.md,
-- "Redis scripts"). Each settlement is applied at most once: a retried batch, or a reservation
-- its lease already gave back, finds no amount and changes nothing.
--
-- KEYS: for each settlement, for each of its scopes: counters hash, expiry set, amounts hash.
-- ARGV: for each settlement: reservation id, used tokens (0 for a release), now (ms),
--       today (days since the epoch), number of scopes.
-- Reply: the number of scope reservations found and settled.
local WINDOW = 60000
local function int(x)
  return string.format('%d', x)
end

local k, a, settled = 1, 1, 0
while a <= #ARGV do
  local id = ARGV[a]
  local used = tonumber(ARGV[a + 1])
  local now = tonumber(ARGV[a + 2])
  local today = tonumber(ARGV[a + 3])
  local scopes = tonumber(ARGV[a + 4])
  a = a + 5
  for _ = 1, scopes do
    local state, expiry, amounts = KEYS[k], KEYS[k + 1], KEYS[k + 2]
    k = k + 3
    local amount = redis.call('HGET', amounts, id)
    if amount then
      settled = settled + 1
      redis.call('HDEL', amounts, id)
      redis.call('ZREM', expiry, id)
      local f = redis.call('HMGET', state, 'ws', 'wr', 'wt', 'day', 'dt', 'res')
      local res = tonumber(f[6] or 0) - tonumber(amount)
      if res < 0 then res = 0 end
      if used > 0 then
        local ws = tonumber(f[1] or -1)
        local wr = tonumber(f[2] or 0)
        local wt = tonumber(f[3] or 0)
        local day = tonumber(f[4] or 0)
        local dt = tonumber(f[5] or 0)
        if ws >= 0 and now >= ws + WINDOW then
          ws, wr, wt = -1, 0, 0
        end
        if day < today then
          day, dt = today, 0
        end
        -- A window that expired with no request since is not reopened by a settlement.
        if ws >= 0 then wt = wt + used end
        dt = dt + used
        redis.call('HSET', state, 'ws', int(ws), 'wr', int(wr), 'wt', int(wt),
          'day', int(day), 'dt', int(dt), 'res', int(res))
      else
        redis.call('HSET', state, 'res', int(res))
      end
    end
  end
end
return settled
