"""The Lua scripts that keep the buckets and the windows (a check, a failure counted, a lease),
each run atomically in Redis, on Redis's clock."""

from kernel.redis import Script

# What both scripts that take tokens share: Redis's clock, and the token buckets named by the
# first KEYS. A bucket is a hash {tokens, at}; absent, it is full.
_BUCKETS = """
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
-- Each of the n buckets refilled up to now, `back` tokens given back, none above its capacity;
-- capacities and refills per second in ARGV, in pairs from ARGV[first].
local function bucket_levels(n, first, back)
  local levels, capacities, rates = {}, {}, {}
  for i = 1, n do
    local capacity = tonumber(ARGV[first + 2 * i - 2])
    local per_ms = tonumber(ARGV[first + 2 * i - 1]) / 1000
    local state = redis.call('HMGET', KEYS[i], 'tokens', 'at')
    local level = capacity
    if state[1] and state[2] then
      local elapsed = math.max(0, now - tonumber(state[2]))
      level = math.min(capacity, tonumber(state[1]) + elapsed * per_ms + back)
    end
    levels[i], capacities[i], rates[i] = level, capacity, per_ms
  end
  return levels, capacities, rates
end
-- Takes `taken` tokens from every bucket and stores the levels.
local function take(levels, capacities, rates, taken)
  for i = 1, #levels do
    levels[i] = levels[i] - taken
    redis.call('HSET', KEYS[i], 'tokens', levels[i], 'at', now)
    -- Once full again the bucket is as good as absent.
    redis.call('PEXPIRE', KEYS[i], math.ceil((capacities[i] - levels[i]) / rates[i]) + 1000)
  end
end
-- Each bucket's tokens left and ms until full, appended to the reply.
local function report(reply, levels, capacities, rates)
  for i = 1, #levels do
    reply[#reply + 1] = math.floor(levels[i])
    reply[#reply + 1] = math.ceil((capacities[i] - levels[i]) / rates[i])
  end
end
"""

# KEYS: n token buckets, then m failure windows.
# ARGV: n, m, then capacity and refill-per-second of each bucket, then the limit of each window,
# then (optional, default 1) the tokens the request costs.
# Takes that many tokens from every bucket, only if each has them and no window is at its limit.
# Replies (integers: Lua numbers are truncated in replies) {allowed, wait ms, then per bucket
# tokens left and ms until full, then per window failures counted and ms until it expires}.
CHECK = Script(
    _BUCKETS
    + """
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local cost = tonumber(ARGV[3 + 2 * n + m] or '1')
local levels, capacities, rates = bucket_levels(n, 3, 0)
local allowed, wait = 1, 0
for i = 1, n do
  if levels[i] < cost then
    allowed = 0
    wait = math.max(wait, (cost - levels[i]) / rates[i])
  end
end
local counts, ttls = {}, {}
for j = 1, m do
  local key = KEYS[n + j]
  local count = tonumber(redis.call('GET', key) or '0')
  local ttl = math.max(0, redis.call('PTTL', key))
  if count >= tonumber(ARGV[2 + 2 * n + j]) then
    allowed = 0
    wait = math.max(wait, ttl)
  end
  counts[j], ttls[j] = count, ttl
end
if allowed == 1 then
  take(levels, capacities, rates, cost)
end
local reply = {allowed, math.ceil(wait)}
report(reply, levels, capacities, rates)
for j = 1, m do
  reply[#reply + 1] = counts[j]
  reply[#reply + 1] = ttls[j]
end
return reply
"""
)

# KEYS: failure windows. ARGV: then limit, window ms and lockout ms of each.
# Counts one failure in each; a window that reaches its limit stays locked for its lockout.
# Replies {failures counted, ms until it expires} per window.
RECORD_FAILURE = Script(
    """
local reply = {}
for j = 1, #KEYS do
  local limit = tonumber(ARGV[3 * j - 2])
  local window, lockout = tonumber(ARGV[3 * j - 1]), tonumber(ARGV[3 * j])
  local count = redis.call('INCR', KEYS[j])
  if count == 1 then redis.call('PEXPIRE', KEYS[j], window) end
  local ttl = redis.call('PTTL', KEYS[j])
  if count >= limit and ttl < lockout then
    redis.call('PEXPIRE', KEYS[j], lockout)
    ttl = lockout
  end
  reply[#reply + 1] = count
  reply[#reply + 1] = math.max(0, ttl)
end
return reply
"""
)


# KEYS: n token buckets. ARGV: n, tokens wanted, tokens given back, the share, then capacity and
# refill-per-second of each bucket.
# A lease: gives back to every bucket the unspent tokens of the caller's previous lease, then
# takes the same number of tokens from every bucket, only if each has one: as many as wanted,
# but at least one and no more than 1/share of what the emptiest bucket holds, so that
# leases shrink to single tokens as a bucket runs low.
# Replies {tokens taken (0: refused), wait ms, then per bucket tokens left and ms until full}.
LEASE = Script(
    _BUCKETS
    + """
local n, want, back = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local share = tonumber(ARGV[4])
local levels, capacities, rates = bucket_levels(n, 5, back)
local lowest, wait = math.huge, 0
for i = 1, n do
  if levels[i] < 1 then wait = math.max(wait, (1 - levels[i]) / rates[i]) end
  lowest = math.min(lowest, levels[i])
end
local taken = 0
if lowest >= 1 then
  taken = math.max(1, math.min(want, math.floor(lowest / share)))
end
if taken > 0 or back > 0 then
  take(levels, capacities, rates, taken)
end
local reply = {taken, math.ceil(wait)}
report(reply, levels, capacities, rates)
return reply
"""
)
