"""The expiry sweep reads the results table in batches (streams/dedupe_state.py: ResultTable.expired_batches)."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from streams.dedupe_state import ResultTable, Revocations

NOW = 1_000_000.0
TTL = 100.0


def results(table: MutableMapping[str, Any]) -> ResultTable:
    return ResultTable(table, ttl_seconds=TTL, model_version="m", revocations=Revocations(), clock=lambda: NOW)


def entries(n: int) -> dict[str, Any]:
    # Even entries expired, odd ones fresh.
    return {f"p{i}": {"entry": {}, "stored_at": NOW - (TTL + 1 if i % 2 == 0 else 1)} for i in range(n)}


async def collect(table: ResultTable, batch_size: int) -> list[list[str]]:
    return [batch async for batch in table.expired_batches(batch_size)]


async def test_a_dict_table_is_swept_in_batches_and_may_change_in_between() -> None:
    table = entries(10)
    batches = []
    async for batch in results(table).expired_batches(batch_size=3):
        batches.append(batch)
        table[f"new{len(batches)}"] = {"entry": {}, "stored_at": 0.0}  # an agent wrote meanwhile: no error
        table.pop(f"p{9 - len(batches)}", None)  # and deleted one the sweep has not reached yet
    assert len(batches) == 4  # 10 keys copied at the start, 3 at a time
    assert sorted(p for b in batches for p in b) == ["p0", "p2", "p4", "p6"]  # p8 deleted before it was read


class LazyStore(MutableMapping[str, Any]):
    """A table whose store is not a dict (like RocksDB): items are read lazily, as the sweep asks for them."""

    def __init__(self, data: dict[str, Any], fail_after: int | None = None) -> None:
        self._items = data
        self.read = 0
        self.fail_after = fail_after

    def items(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        for item in list(self._items.items()):
            if self.fail_after is not None and self.read >= self.fail_after:
                raise RuntimeError("dictionary changed size during iteration")  # a rebalance closed a database
            self.read += 1
            yield item

    def keys(self) -> Any:  # a sweep of a lazy store must not copy its keys
        raise AssertionError("keys() copied")

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._items[key] = value

    def __delitem__(self, key: str) -> None:
        del self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


async def test_a_lazy_store_is_read_a_batch_at_a_time() -> None:
    store = LazyStore(entries(10))
    sweep = results(store).expired_batches(batch_size=4)
    first = await anext(sweep)
    assert (first, store.read) == (["p0", "p2"], 4)  # no more read than the batch
    rest = [batch async for batch in sweep]
    assert rest == [["p4", "p6"], ["p8"]]


async def test_a_rebalance_during_the_sweep_ends_it_early() -> None:
    store = LazyStore(entries(10), fail_after=5)
    assert await collect(results(store), batch_size=4) == [["p0", "p2"]]


def answer(phash: str) -> dict[str, Any]:
    return {"phash": phash, "model_version": "m", "job_id": f"job-{phash}", "created_at": "2026-11-30T09:00:00Z",
            "classification": {"category": "glass", "item_name": "jar", "disposal_instructions": "Glass bin.",
                               "recyclable": True, "confidence": 0.9}}


def test_the_full_read_for_the_rewarm_goes_entry_by_entry() -> None:
    store = LazyStore({f"p{i}": {"entry": answer(f"p{i}"), "stored_at": NOW} for i in range(5)})
    table = results(store)
    table.revocations.revoke("p3", NOW)
    each = table.each()
    entry, stored_at = next(each)
    assert (entry.phash, stored_at, store.read) == ("p0", NOW, 1)  # nothing read ahead
    assert [e.phash for e, _ in each] == ["p1", "p2", "p4"]  # an invalidated answer is not written back


def test_a_rebalance_during_the_full_read_ends_it() -> None:
    store = LazyStore({f"p{i}": {"entry": answer(f"p{i}"), "stored_at": NOW} for i in range(5)}, fail_after=2)
    assert [e.phash for e, _ in results(store).each()] == ["p0", "p1"]
