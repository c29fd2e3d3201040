"""The Lua drivers `RedisStore` wraps around each algorithm's ``step`` / ``refund`` (one EVALSHA).

An algorithm's math lives once, in its class (`tenantlb.ratelimit._algorithms`); this module only
says how a script reads the clock and the state, calls that math, writes the state back and
answers. Two drivers exist because the common case is worth its own script: `single` for a
limiter with one rate (no tables of parameters, no loops) and `multi` for several rates checked
atomically. Both read and write state the same way, so a key shared by a one-rate and a two-rate
limiter means the same thing to both.

Cost per decision inside Redis is dominated by the three ``redis.call``s (TIME, GET, SET ... PX);
the rest is kept lean: state is packed doubles (``struct``, exact and cheaper than msgpack), and
the reply is one binary bulk string, `REPLY` = ``<BBddd`` (allowed, index of the deciding rate,
remaining, reset_after, retry_after), so no number is formatted as text on either side.
"""

from __future__ import annotations

import struct
from typing import Final

from ._algorithms import EPSILON, Algorithm

__all__ = ["REPLY", "multi", "single"]

REPLY: Final = struct.Struct("<BBddd")
"""The layout of a decision reply (26 bytes)."""

# Seconds are counted from 2023-11-14 00:00 UTC (a multiple of 86400) rather than 1970, so the
# doubles in Lua keep sub-microsecond precision; fixed windows still align to UTC days/hours.
EPOCH: Final = 1_699_920_000

_PRELUDE: Final = f"""
local EPSILON = {EPSILON!r}
-- State: an array of doubles packed with struct; anything else (an older format) reads as fresh.
-- The common sizes are spelled out: no table of formats or string building per call.
local function decode(raw)
  if not raw then return nil end
  local n = #raw
  if n == 8 then return {{(struct.unpack('<d', raw))}} end
  if n == 16 then
    local a, b = struct.unpack('<dd', raw)
    return {{a, b}}
  end
  if n == 24 then
    local a, b, c = struct.unpack('<ddd', raw)
    return {{a, b, c}}
  end
  if n == 0 or n % 8 ~= 0 then return nil end
  local s = {{struct.unpack('<' .. string.rep('d', n / 8), raw)}}
  s[#s] = nil -- struct.unpack also returns the next read position
  return s
end
local function encode(s)
  local n = #s
  if n == 1 then return struct.pack('<d', s[1]) end
  if n == 2 then return struct.pack('<dd', s[1], s[2]) end
  if n == 3 then return struct.pack('<ddd', s[1], s[2], s[3]) end
  return struct.pack('<' .. string.rep('d', n), unpack(s))
end
local function px(ttl)
  local ms = math.ceil(ttl * 1000)
  if ms < 1 then ms = 1 end
  return ms
end
local t = redis.call('TIME')
local now = (tonumber(t[1]) - {EPOCH}) + tonumber(t[2]) / 1000000
local mode = ARGV[1]
local cost = tonumber(ARGV[2])
"""

# KEYS[1]: the rate's key. ARGV: mode ('a' acquire, 'p' peek, 'r' refund), cost, limit, per, burst.
_SINGLE: Final = """
local key = KEYS[1]
local limit, per, burst = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local s = decode(redis.call('GET', key))
if mode == 'r' then
  local ns, ttl = refund(s, limit, per, burst, now, cost)
  if ns then redis.call('SET', key, encode(ns), 'PX', px(ttl))
  elseif s then redis.call('DEL', key) end
  return 1
end
local ok, ns, rem, reset, retry, ttl = step(s, limit, per, burst, now, cost)
if ok then
  if mode == 'a' then redis.call('SET', key, encode(ns), 'PX', px(ttl)) end
  return struct.pack('<BBddd', 1, 1, rem, reset, retry)
end
return struct.pack('<BBddd', 0, 1, rem, reset, retry)
"""

# KEYS: one per rate. ARGV: mode, cost, then limit, per, burst for each rate (from ARGV[3i]).
_MULTI: Final = """
local n = #KEYS
local states = {}
for i = 1, n do states[i] = decode(redis.call('GET', KEYS[i])) end
if mode == 'r' then
  for i = 1, n do
    local b = 3 * i
    local s = states[i]
    local ns, ttl = refund(s, tonumber(ARGV[b]), tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), now, cost)
    if ns then redis.call('SET', KEYS[i], encode(ns), 'PX', px(ttl))
    elseif s then redis.call('DEL', KEYS[i]) end
  end
  return 1
end
local news, ttls = {}, {}
local pick, rem, reset, retry = 0, 0, 0, 0
local denied = false
for i = 1, n do
  local b = 3 * i
  local ok, s, r, rs, rt, ttl = step(states[i], tonumber(ARGV[b]), tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), now, cost)
  news[i] = s
  ttls[i] = ttl
  if not ok then
    if (not denied) or rt > retry then pick, rem, reset, retry = i, r, rs, rt end
    denied = true
  elseif (not denied) and (pick == 0 or r < rem) then
    pick, rem, reset, retry = i, r, rs, rt
  end
end
if denied then return struct.pack('<BBddd', 0, pick, rem, reset, retry) end
if mode == 'a' then
  for i = 1, n do redis.call('SET', KEYS[i], encode(news[i]), 'PX', px(ttls[i])) end
end
return struct.pack('<BBddd', 1, pick, rem, reset, retry)
"""


def single(algorithm: Algorithm) -> str:
    """The script deciding one rate of *algorithm*."""
    return _PRELUDE + algorithm.lua + _SINGLE


def multi(algorithm: Algorithm) -> str:
    """The script deciding several rates of *algorithm* atomically (a denial writes nothing)."""
    return _PRELUDE + algorithm.lua + _MULTI
