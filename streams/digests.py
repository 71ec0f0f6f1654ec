"""Content digest -> pHash in Redis, so a byte-identical re-upload skips the decode.

The same bytes always give the same pHash (for one hashing method, named in the key), so the mapping may live
as long as the results it leads to. Only images that hashed successfully are recorded: a corrupt upload is
decoded, and refused, every time.
"""

from __future__ import annotations

from redis.asyncio import Redis

# Change it with anything that changes the pHash of given bytes (hash size, draft scale, orientation).
HASH_METHOD = "phash256-draft256-exif"
KEY_PREFIX = f"cache:image:digest:{HASH_METHOD}:"


class DigestIndex:
    def __init__(self, redis: Redis, *, ttl_seconds: int) -> None:
        self._redis = redis
        self._ttl = ttl_seconds

    async def phash_of(self, digest: str, *, max_pixels: int) -> str | None:
        """The pHash recorded for these bytes, if the image is within ``max_pixels`` (the limit may have been
        lowered since it was recorded: then the bytes are decoded again, and refused by the decode path)."""
        raw = await self._redis.get(KEY_PREFIX + digest)
        if raw is None:
            return None
        phash, _, pixels = (raw.decode() if isinstance(raw, bytes) else str(raw)).partition(" ")
        if len(phash) != 64 or not pixels.isdigit() or int(pixels) > max_pixels:
            return None
        return phash

    async def remember(self, digest: str, phash: str, *, pixels: int) -> None:
        await self._redis.set(KEY_PREFIX + digest, f"{phash} {pixels}", ex=self._ttl)
