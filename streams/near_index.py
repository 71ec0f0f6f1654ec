"""The near-duplicate index: find a cached pHash within T bits of a new one, in Redis, shared by every worker.

Re-uploads of one photo (re-encoded, resized, a screenshot, a little brighter, EXIF-rotated) hash a few bits
apart, while different photos are far apart (docs/NEAR_DUPLICATES.md has the measurement). Exact pHash equality
misses many re-uploads; this index catches them.

**Multi-index hashing.** The 256 bits are cut into ``m = T + 1`` contiguous chunks. Two hashes within T bits
differ in at most T chunks, so (pigeonhole) at least one of the m chunks is *equal*. Each cached pHash is a
member of m Redis sorted sets, one per chunk value::

    cache:image:mih:{near}:{tag}:{i}:{chunk hex}    members: pHash (64 hex chars), score: its expiry (epoch s)

A lookup reads the m sets of the query's chunk values, verifies every candidate with a popcount of the XOR and
keeps those within T. With chunks of 256/m bits the number of candidates stays small however many hashes are
cached (m x N / 2^(256/m) for uniform hashes: 16 for T=12 and a million entries), so the cost stays flat.
``tag`` is a short digest of the model version (model|prompt|taxonomy) and m: results of another version, or of
another chunk layout, live under other keys and are never candidates.

**Expiry without unbounded growth.** Redis cannot expire members of a set, so each member's score is the expiry
of the entry it points to (the entry's TTL, 7 days by default). Every touch of a set (an insert, a lookup) first
drops its expired members (ZREMRANGEBYSCORE), and every insert moves the set's own expiry to its latest member's
(EXPIREAT): a set nobody touches disappears when its last member expires, and a set that is touched is trimmed.

**Near-duplicates in flight.** When a lookup finds nothing and the job is going to pay for a model call, the same
Lua script *claims* the pHash in a second index (``cache:image:mihp:...``, score = now + INFLIGHT_TIMEOUT_SECONDS).
A near-duplicate that arrives while that call is under way (on any partition, on any worker) finds the claim
and waits on it instead of paying a second call; the claim is dropped when the result is indexed or the call
fails. The check and the claim run in one script, so two near-duplicates can never both miss each other: no
distributed lock is taken, Redis runs each script atomically.

**Redis Cluster.** Every key of the index (results, claims, the job mappings, the layouts) carries the hash tag
``{near}``, so each script's keys share one slot and the same scripts run on a single Redis and on a cluster.
The cached entries (``cache:image:hash:{phash}``) live in other slots, so the script does not read them: it
answers the closest candidates, and the client reads their entries (one GET each, closest first) and checks the
model version. A lookup that finds results is two round trips; one that finds none (the common case) is one.
The price of one slot: the whole index lives on one master (docs/SCALING.md has its size).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from pydantic import ValidationError
from redis.asyncio import Redis

from models.records import PHASH_HEX_LEN, CachedClassification
from models.settings import Settings
from streams.cache import KEY_PREFIX as ENTRY_PREFIX

HASH_BITS = PHASH_HEX_LEN * 4
# One hash tag for every key the scripts touch: on a Redis Cluster they share a slot (see the module's notes).
SLOT_TAG = "{near}"
INDEX_PREFIX = f"cache:image:mih:{SLOT_TAG}:"  # results
PENDING_PREFIX = f"cache:image:mihp:{SLOT_TAG}:"  # claims of model calls under way
LAYOUTS_KEY = f"cache:image:near-layouts:{SLOT_TAG}"  # "{tag}:{m}" by expiry: the layouts in use (invalidation)
JOB_PREFIX = f"cache:job:{SLOT_TAG}:"  # job_id -> pHash of the entry its model call produced
# How many of the closest indexed results a lookup answers (the client reads their entries, closest first).
NEAR_CANDIDATES = 8
INVALIDATED_KEY = "cache:image:invalidated"  # pHash -> when it was invalidated (workers drop table copies)


# --- chunks ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """How the 256 bits are cut: ``spans[i] = (first bit, bit count)``, most significant bit first."""

    max_distance: int
    spans: tuple[tuple[int, int], ...]

    @property
    def chunks(self) -> int:
        return len(self.spans)


def layout_for(max_distance: int) -> Layout:
    """``max_distance + 1`` chunks as equal as possible: a match within T bits shares at least one whole chunk."""
    if not 0 <= max_distance < HASH_BITS // 4:
        raise ValueError(f"max_distance must be in 0..{HASH_BITS // 4 - 1}")
    m = max_distance + 1
    base, extra = divmod(HASH_BITS, m)
    spans, start = [], 0
    for i in range(m):
        width = base + (1 if i < extra else 0)
        spans.append((start, width))
        start += width
    return Layout(max_distance, tuple(spans))


def chunk_values(phash: str, layout: Layout) -> list[int]:
    value = int(phash, 16)
    return [(value >> (HASH_BITS - start - width)) & ((1 << width) - 1) for start, width in layout.spans]


def chunk_keys(prefix: str, tag: str, phash: str, layout: Layout) -> list[str]:
    return [f"{prefix}{tag}:{i}:{v:0{-(-w // 4)}x}"
            for i, (v, (_, w)) in enumerate(zip(chunk_values(phash, layout), layout.spans, strict=True))]


def layout_tag(model_version: str, layout: Layout) -> str:
    return hashlib.sha1(f"{model_version}|m{layout.chunks}".encode()).hexdigest()[:8]


# --- lookups --------------------------------------------------------------------------------------------------


class NearKind(StrEnum):
    NEAR = "near"  # a cached result within T bits: reuse it
    PENDING = "pending"  # a model call within T bits is under way: wait on it
    CLAIMED = "claimed"  # nothing near: this job's pHash is now claimed, it pays for the call
    MISS = "miss"  # nothing near and nothing claimed


@dataclass(frozen=True)
class NearMatch:
    kind: NearKind
    phash: str | None = None  # the matched pHash (cached or in flight)
    distance: int | None = None
    entry: CachedClassification | None = None


MISS = NearMatch(NearKind.MISS)


class NearIndex(Protocol):
    """What the worker needs of the index: :class:`RedisNearIndex` (tests/doubles.py has one in memory)."""

    @property
    def max_distance(self) -> int: ...

    async def lookup(self, phash: str, *, claim: bool, pending: bool = True, results: bool = True) -> NearMatch: ...

    async def add(self, entry: CachedClassification) -> None: ...

    async def claim(self, phash: str) -> None: ...

    async def release(self, phash: str) -> None: ...

# Popcount of a 32-bit XOR with LuaBitOp (Redis ships it as ``bit``); the subtraction may go negative, which the
# following bit.band folds back modulo 2^32, and every intermediate value stays far inside the doubles' 2^51.
_LUA_COMMON = """
local q = ARGV[1]
local maxd = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local qw = {}
for i = 0, 7 do qw[i + 1] = tonumber(string.sub(q, i * 8 + 1, i * 8 + 8), 16) end

local function distance(h)
  local d = 0
  for i = 0, 7 do
    local x = bit.bxor(qw[i + 1], tonumber(string.sub(h, i * 8 + 1, i * 8 + 8), 16))
    x = x - bit.band(bit.rshift(x, 1), 0x55555555)
    x = bit.band(x, 0x33333333) + bit.band(bit.rshift(x, 2), 0x33333333)
    x = bit.band(x + bit.rshift(x, 4), 0x0F0F0F0F)
    d = d + bit.band(x, 0xFF) + bit.band(bit.rshift(x, 8), 0xFF) + bit.band(bit.rshift(x, 16), 0xFF)
          + bit.rshift(x, 24)
    if d > maxd then return d end
  end
  return d
end

local function top_expiry(key)
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if top[2] then redis.call('EXPIREAT', key, math.ceil(tonumber(top[2]))) end
end

-- Members within maxd of q in KEYS[first..last], closest first; expired members are dropped on the way.
local function near(first, last, skip_self)
  local seen, found = {}, {}
  for k = first, last do
    redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
    for _, h in ipairs(redis.call('ZRANGEBYSCORE', KEYS[k], '(' .. now, '+inf')) do
      if not seen[h] then
        seen[h] = true
        if #h == 64 and not (skip_self and h == q) then
          local d = distance(h)
          if d <= maxd then found[#found + 1] = {h, d} end
        end
      end
    end
  end
  table.sort(found, function(a, b) return a[2] < b[2] end)
  return found
end
"""

# KEYS: m result keys, m pending keys (all in one slot). ARGV: phash, T, claim (0/1), claim ttl s, (unused),
# (unused), look at results (0/1), look at claims (0/1), candidates to answer.
# Answers {'near', pHash, distance, pHash, distance...} (closest first; the client reads and checks their entries,
# which live in other slots), {'pending', pHash, distance}, {'claimed'} or {'miss'}.
LOOKUP_LUA = _LUA_COMMON + """
local m = #KEYS / 2
if ARGV[7] == '1' then
  local found = near(1, m, false)
  if #found > 0 then
    local reply = {'near'}
    for i = 1, math.min(#found, tonumber(ARGV[9])) do
      reply[#reply + 1] = found[i][1]
      reply[#reply + 1] = found[i][2]
    end
    return reply
  end
end
if ARGV[8] == '1' then
  local pending = near(m + 1, 2 * m, true)
  if #pending > 0 then return {'pending', pending[1][1], pending[1][2]} end
end
if ARGV[3] == '1' then
  local expiry = math.ceil(now + tonumber(ARGV[4]))
  for k = m + 1, 2 * m do
    redis.call('ZADD', KEYS[k], expiry, q)
    top_expiry(KEYS[k])
  end
  return {'claimed'}
end
return {'miss'}
"""

# KEYS: m result keys, m pending keys, job key, layouts key. ARGV: phash, T, ttl s, job id, tag, m.
ADD_LUA = _LUA_COMMON + """
local m = tonumber(ARGV[6])
local ttl = tonumber(ARGV[3])
local expiry = math.ceil(now + ttl)  -- whole seconds: Redis stores integer scores compactly
for k = 1, m do
  redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
  redis.call('ZADD', KEYS[k], expiry, q)
  top_expiry(KEYS[k])
end
for k = m + 1, 2 * m do redis.call('ZREM', KEYS[k], q) end
if ARGV[4] ~= '' then redis.call('SET', KEYS[2 * m + 1], q, 'EX', ttl) end
local layouts = KEYS[2 * m + 2]
redis.call('ZREMRANGEBYSCORE', layouts, '-inf', now)
redis.call('ZADD', layouts, expiry, ARGV[5] .. ':' .. m)
top_expiry(layouts)
return m
"""

# KEYS: pending keys. ARGV: phash, T, claim ttl s (<= 0: release).
CLAIM_LUA = _LUA_COMMON + """
local ttl = tonumber(ARGV[3])
for k = 1, #KEYS do
  if ttl > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
    redis.call('ZADD', KEYS[k], math.ceil(now + ttl), q)
    top_expiry(KEYS[k])
  else
    redis.call('ZREM', KEYS[k], q)
  end
end
return #KEYS
"""


class RedisNearIndex:
    """The index in Redis. ``prefix`` namespaces every key (benchmarks and tests use their own)."""

    def __init__(self, redis: Redis, *, max_distance: int, model_version: str, ttl_seconds: int,
                 claim_ttl_seconds: float, prefix: str = "") -> None:
        self.redis = redis
        self.layout = layout_for(max_distance)
        self.model_version = model_version
        self.tag = layout_tag(model_version, self.layout)
        self.ttl_seconds = ttl_seconds
        self.claim_ttl_seconds = claim_ttl_seconds
        self.prefix = prefix
        self._lookup = redis.register_script(LOOKUP_LUA)
        self._add = redis.register_script(ADD_LUA)
        self._claim = redis.register_script(CLAIM_LUA)

    @property
    def max_distance(self) -> int:
        return self.layout.max_distance

    def result_keys(self, phash: str) -> list[str]:
        return chunk_keys(self.prefix + INDEX_PREFIX, self.tag, phash, self.layout)

    def pending_keys(self, phash: str) -> list[str]:
        return chunk_keys(self.prefix + PENDING_PREFIX, self.tag, phash, self.layout)

    async def lookup(self, phash: str, *, claim: bool, pending: bool = True, results: bool = True) -> NearMatch:
        """The closest valid cached result within T; else (``pending``) the closest claim of another pHash within
        T; else claim ``phash`` when ``claim``. One atomic script: two near-duplicates never both claim."""
        reply = await self._lookup(
            keys=[*self.result_keys(phash), *self.pending_keys(phash)],
            args=[phash, self.max_distance, int(claim), self.claim_ttl_seconds, self.prefix + ENTRY_PREFIX,
                  self.model_version, int(results), int(pending), NEAR_CANDIDATES],
        )
        kind = NearKind(_text(reply[0]))
        if kind is NearKind.NEAR:
            for i in range(1, len(reply) - 1, 2):
                candidate = _text(reply[i])
                entry = self._valid_entry(await self.redis.get(self.prefix + ENTRY_PREFIX + candidate))
                if entry is not None:
                    return NearMatch(kind, candidate, int(reply[i + 1]), entry)
            # Indexed, but expired, evicted, unreadable or of another model: look again without results (the
            # claim, if asked for, is then taken atomically with the check of calls under way).
            return await self.lookup(phash, claim=claim, pending=pending, results=False)
        if kind is NearKind.PENDING:
            return NearMatch(kind, _text(reply[1]), int(reply[2]))
        return NearMatch(kind)

    def _valid_entry(self, raw: bytes | str | None) -> CachedClassification | None:
        if raw is None:
            return None
        try:
            entry = CachedClassification.model_validate_json(raw)
        except ValidationError:
            return None
        return entry if entry.model_version == self.model_version else None

    async def add(self, entry: CachedClassification) -> None:
        """Index a new result (same TTL as the entry), map its job to it, and drop the claim of its pHash."""
        keys = [*self.result_keys(entry.phash), *self.pending_keys(entry.phash),
                self.prefix + JOB_PREFIX + entry.job_id, self.prefix + LAYOUTS_KEY]
        await self._add(keys=keys, args=[entry.phash, self.max_distance, self.ttl_seconds, entry.job_id, self.tag,
                                         self.layout.chunks])

    async def claim(self, phash: str) -> None:
        """Claim (or re-claim) ``phash`` as in flight for another CLAIM_TTL, unconditionally."""
        await self._claim(keys=self.pending_keys(phash), args=[phash, self.max_distance, self.claim_ttl_seconds])

    async def release(self, phash: str) -> None:
        """Drop the claim of ``phash`` (its model call failed or was given up)."""
        await self._claim(keys=self.pending_keys(phash), args=[phash, self.max_distance, 0])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def redis_index(redis: Redis, settings: Settings, *, prefix: str = "") -> RedisNearIndex:
    return RedisNearIndex(redis, max_distance=settings.near_duplicate_max_distance,
                          model_version=settings.model_version, ttl_seconds=settings.cache_ttl_seconds,
                          claim_ttl_seconds=settings.inflight_timeout_seconds, prefix=prefix)
