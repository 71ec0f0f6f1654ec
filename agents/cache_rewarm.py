"""Re-warm Redis from this worker's table after Redis lost answers (streams/rewarm.py says when and how)."""

from __future__ import annotations

import time

from streams import rewarm
from streams.app import app


@app.timer(interval=rewarm.REWARM_INTERVAL_SECONDS)
async def rewarm_shared_cache() -> None:
    # Only with the tables recovered and no rebalance under way: a pass must not miss answers it has not read.
    if app.rebalancing or app.in_recovery or not app.tables.recovery.completed.is_set():  # type: ignore[attr-defined]
        return
    ctx = await app.context.ready()
    await rewarm.rewarm_quietly(
        ctx.timers.rewarm, ctx.redis, ctx.cache, ctx.near if ctx.settings.near_duplicate_max_distance > 0 else None,
        table=ctx.results.each,  # read as the pass goes, not all at once
        recent=lambda: ctx.results.recent(time.time() - rewarm.RECENT_WINDOW_SECONDS),
        ttl_seconds=ctx.settings.cache_ttl_seconds,
    )
