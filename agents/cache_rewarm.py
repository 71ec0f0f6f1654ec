"""Re-warm Redis from this worker's table after Redis lost answers (streams/rewarm.py says when and how)."""

from __future__ import annotations

import time

from streams import near_index, resources, rewarm, tables
from streams.app import app

state = rewarm.RewarmState()


@app.timer(interval=rewarm.REWARM_INTERVAL_SECONDS)
async def rewarm_shared_cache() -> None:
    # Only with the tables recovered and no rebalance under way: a pass must not miss answers it has not read.
    if app.rebalancing or app.in_recovery or not app.tables.recovery.completed.is_set():  # type: ignore[attr-defined]
        return
    res = await resources.ready()
    if res.redis is None:
        return
    settings = res.settings
    index = near_index.for_resources(res) if settings.near_duplicate_max_distance > 0 else None
    await rewarm.rewarm_quietly(
        state, res.redis, res.cache, index,
        table=tables.all_entries,
        recent=lambda: tables.recent_entries(time.time() - rewarm.RECENT_WINDOW_SECONDS),
        ttl_seconds=settings.cache_ttl_seconds,
    )
