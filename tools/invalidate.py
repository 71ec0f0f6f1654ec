"""Stop serving one cached classification: by its pHash, or by the job whose model call produced it.

    python -m tools.invalidate --phash 3f0c...e1            # 64 hex characters (a result's cache.phash or
                                                            # cache.matched_phash)
    python -m tools.invalidate --job-id 7d0c...             # the job that paid (a result's cache.reused_job_id)

Deletes the entry from Redis with its near-duplicate index memberships; workers stop serving their table copies
within a few seconds. The next upload of that photo (or of a near-duplicate) pays for a new model call.
Reads ``REDIS_URL`` like the worker. Prints ``{"invalidated": [pHash, ...]}``; exits 1 when nothing was cached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from models.settings import load_settings
from streams import redis_client
from streams.invalidation import invalidate


async def _run(redis_url: str, phash: str | None, job_id: str | None, cluster: bool = False) -> list[str]:
    redis = await redis_client.open_client(redis_url, cluster=cluster)
    try:
        return await invalidate(redis, phash=phash, job_id=job_id)
    finally:
        await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--phash", help="the cached result's pHash (64 hex characters)")
    target.add_argument("--job-id", help="the job whose model call produced the cached result")
    args = parser.parse_args(argv)
    settings = load_settings()
    try:
        invalidated = asyncio.run(_run(settings.redis_url, args.phash, args.job_id, settings.redis_cluster))
    except ValueError as exc:
        parser.error(str(exc))
    print(json.dumps({"invalidated": invalidated}))
    if not invalidated:
        print(f"nothing cached for {'phash ' + args.phash if args.phash else 'job ' + args.job_id}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
