"""Who a client is, and per-client rate limits shared by every API instance (Redis).

Client identity (``API_TRUSTED_PROXY_HOPS``): 0 takes the TCP peer address; N > 0 takes the address N
entries from the right of ``X-Forwarded-For``, the one the outermost of N trusted proxies appended (entries
further left are whatever the client wrote, so they are never believed). A request with fewer entries than
that did not come through the proxies: its peer address counts.

Limits are fixed windows (``RATE_LIMIT_WINDOW_SECONDS``): at most ``limit`` calls per client and window; the
call over the limit gets 429 with ``Retry-After`` (seconds to the end of the window). One Lua call per
request, so instances never race on a counter.
"""

from __future__ import annotations

import math
import time
from typing import Protocol

from aiohttp import web
from redis.asyncio import Redis

from api.errors import ApiError

MAX_CLIENT_ID = 64

# INCR the window's counter, start its expiry on the first hit; answer the count and the ms left.
_HIT_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
"""


def client_id(request: web.BaseRequest, trusted_hops: int) -> str:
    peer = request.remote or "unknown"
    if trusted_hops > 0:
        forwarded = [hop.strip() for hop in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
        forwarded = [hop for hop in forwarded if hop]
        if len(forwarded) >= trusted_hops:
            return forwarded[-trusted_hops][:MAX_CLIENT_ID]
    return peer[:MAX_CLIENT_ID]


class RateLimiter(Protocol):
    async def hit(self, bucket: str, client: str, limit: int, window_s: int) -> float | None:
        """Count one call; None if it is allowed, else the seconds until the client may call again."""
        ...


class RedisRateLimiter:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._script = redis.register_script(_HIT_SCRIPT)

    async def hit(self, bucket: str, client: str, limit: int, window_s: int) -> float | None:
        count, ttl_ms = await self._script(keys=[f"api:ratelimit:{bucket}:{client}"], args=[window_s * 1000])
        return None if int(count) <= limit else max(int(ttl_ms), 1) / 1000


class MemoryRateLimiter:
    """One process's counters (tests with fake backends)."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int]] = {}

    async def hit(self, bucket: str, client: str, limit: int, window_s: int) -> float | None:
        key, now = f"{bucket}:{client}", time.monotonic()
        ends, count = self._windows.get(key, (0.0, 0))
        if now >= ends:
            ends, count = now + window_s, 0
        self._windows[key] = (ends, count + 1)
        return None if count + 1 <= limit else max(ends - now, 0.001)


async def enforce(request: web.Request, limiter: RateLimiter, bucket: str, limit: int, window_s: int,
                  trusted_hops: int) -> None:
    """429 ``RATE_LIMITED`` with ``Retry-After`` once ``limit`` calls of this client are used up (0: no limit)."""
    if limit <= 0:
        return
    retry_after = await limiter.hit(bucket, client_id(request, trusted_hops), limit, window_s)
    if retry_after is not None:
        seconds = max(1, math.ceil(retry_after))
        raise ApiError(429, "RATE_LIMITED", f"too many {bucket} requests; retry in {seconds} s",
                       headers={"Retry-After": str(seconds)})
