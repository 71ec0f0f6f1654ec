"""A global guard on paid model calls: at most so many per minute and per day, across every worker.

Counted in Redis (fixed windows, one key each; both keys share the hash tag ``{model-budget}`` so the script runs
on one Redis Cluster slot). A call over either limit is not made: the job fails with ``MODEL_BUDGET_EXCEEDED``.
When Redis cannot be asked, the call is made (logged): the guard caps spend, it must not stop a healthy service.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from streams import metrics

log = logging.getLogger(__name__)

# KEYS: minute counter, day counter. ARGV: minute limit, day limit (0 = no limit). Counts only a call it allows,
# so refused jobs do not use up the next window's budget.
_SPEND = """
local minute = tonumber(redis.call('GET', KEYS[1]) or '0')
local day = tonumber(redis.call('GET', KEYS[2]) or '0')
local per_minute, per_day = tonumber(ARGV[1]), tonumber(ARGV[2])
if per_minute > 0 and minute >= per_minute then return 'minute' end
if per_day > 0 and day >= per_day then return 'day' end
redis.call('INCR', KEYS[1]); redis.call('EXPIRE', KEYS[1], 120)
redis.call('INCR', KEYS[2]); redis.call('EXPIRE', KEYS[2], 172800)
return 'ok'
"""


@dataclass(frozen=True, slots=True)
class BudgetVerdict:
    allowed: bool
    window: str | None = None  # "minute" or "day" when refused


class ModelBudget:
    def __init__(self, redis: Redis, *, per_minute: int, per_day: int, namespace: str) -> None:
        self._redis = redis
        self._per_minute = per_minute
        self._per_day = per_day
        self._namespace = namespace
        self._spend = redis.register_script(_SPEND)

    @property
    def enabled(self) -> bool:
        return self._per_minute > 0 or self._per_day > 0

    def keys(self, now: float) -> list[str]:
        minute, day = int(now // 60), time.strftime("%Y%m%d", time.gmtime(now))
        return [f"model:budget:{{{self._namespace}}}:minute:{minute}", f"model:budget:{{{self._namespace}}}:day:{day}"]

    async def try_spend(self, now: float | None = None) -> BudgetVerdict:
        """Take one call from the budget, or say which window is used up."""
        if not self.enabled:
            return BudgetVerdict(True)
        try:
            answer = await self._spend(keys=self.keys(time.time() if now is None else now),
                                       args=[self._per_minute, self._per_day])
        except RedisError as exc:
            log.warning("model budget unknown (%s): the call is made", exc)
            return BudgetVerdict(True)
        window = answer.decode() if isinstance(answer, bytes) else str(answer)
        if window == "ok":
            return BudgetVerdict(True)
        metrics.model_budget_refusals_total.labels(window=window).inc()
        return BudgetVerdict(False, window)
