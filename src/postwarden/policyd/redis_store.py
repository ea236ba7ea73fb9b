"""Counters in Redis, shared by every MTA that points at the same server.

A whole batch of operations runs as one Lua script: one round trip per decision,
and atomic, so two MTAs counting the same sender at the same moment never both
take the last unit of a budget. The script keeps the same sliding windows as the
local store (``counters.py``), with Redis's clock so that MTAs need not agree
on the time. Redis is used as a single server (or a replicated one behind a
single address), not as a cluster: the keys of one decision are not in one slot.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from postwarden.policyd.counters import bucket_seconds
from postwarden.policyd.decide import (
    Add,
    Ban,
    BanCheck,
    Distinct,
    Op,
    Result,
    SimilarSizes,
    Take,
    abuse_keys,
)
from postwarden.policyd.resp import RespClient, RespError, reason
from postwarden.policyd.stores import StoreUnavailable

log = logging.getLogger("postwarden.policyd")
PREFIX = "pw:"
TIMEOUT = 2.0

# ARGV: op code, then its fields; results in the same order as the ops.
#   T key weight limit window bucket refuses -> 1 fits / 0 not (see decide.Take)
#   A key weight window bucket         -> count in the window
#   S key size window tolerance        -> similar sizes in the window
#   D key member window                -> distinct members seen in the window
#   C client                           -> 1 banned (and the batch stops) / 0
#   B client seconds                   -> 1 a new ban / 0 one was in force
SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local results = {}
local i = 1

local function window_total(key, window, bucket)
  local current = math.floor(now / bucket)
  local spanned = math.floor((window + bucket - 1) / bucket)
  local oldest_kept = current - spanned - 1
  local fields = redis.call('HGETALL', key)
  local total = 0
  for j = 1, #fields, 2 do
    local number = tonumber(fields[j])
    if number <= oldest_kept then
      redis.call('HDEL', key, fields[j])
    else
      total = total + tonumber(fields[j + 1])
    end
  end
  return total, current
end

-- refused: a refusing Take does not fit, so the batch counts nothing
local refused = false
local totals = {}
local j = 1
while j <= #ARGV do
  local op = ARGV[j]
  if op == 'T' then
    local total, current = window_total(ARGV[j+1], tonumber(ARGV[j+4]), tonumber(ARGV[j+5]))
    totals[j] = {total, current}
    if ARGV[j+6] == '1' and total + tonumber(ARGV[j+2]) > tonumber(ARGV[j+3]) then
      refused = true
    end
    j = j + 7
  elseif op == 'A' or op == 'S' then j = j + 5
  elseif op == 'D' then j = j + 4
  elseif op == 'C' then j = j + 2
  else j = j + 3 end
end

while i <= #ARGV do
  local op = ARGV[i]
  if op == 'T' then
    local key, weight, limit = ARGV[i+1], tonumber(ARGV[i+2]), tonumber(ARGV[i+3])
    local window, bucket = tonumber(ARGV[i+4]), tonumber(ARGV[i+5])
    local total, current = totals[i][1], totals[i][2]
    if total + weight <= limit then
      if not refused then
        redis.call('HINCRBY', key, current, weight)
        redis.call('EXPIRE', key, window + 2 * bucket)
      end
      results[#results + 1] = 1
    else
      results[#results + 1] = 0
    end
    i = i + 7
  elseif op == 'A' then
    local key, weight = ARGV[i+1], tonumber(ARGV[i+2])
    local window, bucket = tonumber(ARGV[i+3]), tonumber(ARGV[i+4])
    local total, current = window_total(key, window, bucket)
    redis.call('HINCRBY', key, current, weight)
    redis.call('EXPIRE', key, window + 2 * bucket)
    results[#results + 1] = total + weight
    i = i + 5
  elseif op == 'S' and refused then
    results[#results + 1] = 0
    i = i + 5
  elseif op == 'S' then
    local key, size = ARGV[i+1], tonumber(ARGV[i+2])
    local window, tolerance = tonumber(ARGV[i+3]), tonumber(ARGV[i+4])
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    local serial = redis.call('INCR', key .. ':n')
    redis.call('EXPIRE', key .. ':n', window + 1)
    redis.call('ZADD', key, now, serial .. ':' .. size)
    redis.call('EXPIRE', key, window + 1)
    local low, high = size * (1 - tolerance), size * (1 + tolerance)
    local similar = 0
    for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
      local other = tonumber(string.match(member, ':(%d+)$'))
      if other >= low and other <= high then similar = similar + 1 end
    end
    results[#results + 1] = similar
    i = i + 5
  elseif op == 'D' then
    local key, window = ARGV[i+1], tonumber(ARGV[i+3])
    redis.call('ZADD', key, now, ARGV[i+2])
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    redis.call('EXPIRE', key, window + 1)
    results[#results + 1] = redis.call('ZCARD', key)
    i = i + 4
  elseif op == 'C' then
    if redis.call('EXISTS', ARGV[i+1]) == 1 then
      results[#results + 1] = 1
      return results
    end
    results[#results + 1] = 0
    i = i + 2
  elseif op == 'B' then
    local ttl = redis.call('TTL', ARGV[i+1])
    local seconds = tonumber(ARGV[i+2])
    if ttl < seconds then redis.call('SET', ARGV[i+1], '1', 'EX', seconds) end
    if ttl == -2 then results[#results + 1] = 1 else results[#results + 1] = 0 end
    i = i + 3
  else
    return redis.error_reply('unknown op ' .. op)
  end
end
return results
"""


def encode(ops: list[Op]) -> list[str | int | float]:
    args: list[str | int | float] = []
    for op in ops:
        # plain int(): sizes and durations are int subclasses that print as "1h"
        if isinstance(op, Take):
            window = int(op.window)
            args += [
                "T",
                PREFIX + op.key,
                int(op.weight),
                int(op.limit),
                window,
                bucket_seconds(window),
                1 if op.refuses else 0,
            ]
        elif isinstance(op, Add):
            window = int(op.window)
            args += ["A", PREFIX + op.key, int(op.weight), window, bucket_seconds(window)]
        elif isinstance(op, SimilarSizes):
            args += ["S", PREFIX + op.key, int(op.size), int(op.window), float(op.tolerance)]
        elif isinstance(op, Distinct):
            args += ["D", PREFIX + op.key, op.member, int(op.window)]
        elif isinstance(op, BanCheck):
            args += ["C", f"{PREFIX}ban:{op.client}"]
        else:
            assert isinstance(op, Ban)
            args += ["B", f"{PREFIX}ban:{op.client}", int(op.seconds)]
    return args


def decode(ops: list[Op], raw: list[Any]) -> list[Result]:
    results: list[Result] = []
    for op, value in zip(ops, raw, strict=False):
        if isinstance(op, Take | BanCheck | Ban):
            results.append(bool(value))
        else:
            results.append(int(value))
    # a ban ends the script early: the ops after it have no result
    results += [None] * (len(ops) - len(results))
    return results


class RedisStore:
    def __init__(self, url: str) -> None:
        self.client = RespClient(url, timeout=TIMEOUT)
        self.sha = hashlib.sha1(SCRIPT.encode()).hexdigest()

    async def run(self, ops: list[Op]) -> list[Result]:
        arguments = encode(ops)
        try:
            try:
                raw = await self.client.call("EVALSHA", self.sha, 0, *arguments)
            except RespError as error:
                if not str(error).startswith("NOSCRIPT"):
                    raise
                raw = await self.client.call("EVAL", SCRIPT, 0, *arguments)
        except (RespError, OSError, ConnectionError, TimeoutError) as error:
            raise StoreUnavailable(f"redis: {reason(error)}") from None
        return decode(ops, list(raw))

    async def bans(self) -> dict[str, float]:
        """Every ban in force on every MTA of this Redis (SCAN: it never blocks Redis)."""
        found: dict[str, float] = {}
        try:
            now = time.time()
            cursor = "0"
            while True:
                cursor_raw, keys = await self.client.call(
                    "SCAN", cursor, "MATCH", f"{PREFIX}ban:*", "COUNT", 1000
                )
                cursor = cursor_raw.decode() if isinstance(cursor_raw, bytes) else str(cursor_raw)
                for key in keys:
                    left = await self.client.call("PTTL", key)
                    name = key.decode() if isinstance(key, bytes) else str(key)
                    if int(left) > 0:
                        found[name.removeprefix(f"{PREFIX}ban:")] = now + int(left) / 1000
                if cursor == "0":
                    return found
        except (RespError, OSError, ConnectionError, TimeoutError) as error:
            raise StoreUnavailable(f"redis: {reason(error)}") from None

    async def lift(self, client: str) -> bool:
        try:
            await self.client.call("DEL", *(PREFIX + key for key in abuse_keys(client)))
            return bool(await self.client.call("DEL", f"{PREFIX}ban:{client}"))
        except (RespError, OSError, ConnectionError, TimeoutError) as error:
            raise StoreUnavailable(f"redis: {reason(error)}") from None

    async def close(self) -> None:
        await self.client.close()
