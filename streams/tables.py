"""Partition-local state of the dedupe step, keyed by pHash (co-partitioned with the pHash-keyed topics).

- ``results_by_phash``: recent classifications, so repeats skip even the Redis round trip.
- ``inflight_by_phash``: hashes whose model call is under way, with the jobs waiting on it.

The agents read and write them through the worker's context (``ctx.results``, ``ctx.calls``:
streams/dedupe_state.py). Faust tables have no per-key TTL: every value carries ``stored_at`` and readers treat old
entries as absent. A timer in ``agents/maintenance.py`` finds expired or stuck entries and sends a maintenance
event keyed by the same pHash; the change is then made inside a stream, so Faust writes the changelog to the
event's partition, the same one the pHash-keyed topics use (equal partition counts, same default partitioner on
the same raw keys).
"""

from __future__ import annotations

import faust

from streams import topics
from streams.app import app
from streams.table_store import CHANGELOG_TOPIC_CONFIG

# Raw UTF-8 keys, like the topics: the partitioner then maps a pHash to the same partition everywhere.
_SCHEMA: faust.Schema = faust.Schema(key_type=str, key_serializer="raw", value_serializer="json")

results_by_phash = app.Table(
    topics.RESULTS_TABLE,
    schema=_SCHEMA,
    extra_topic_configs=CHANGELOG_TOPIC_CONFIG,  # compacted hourly (streams/table_store.py)
    help="pHash -> {entry: CachedClassification, stored_at: epoch seconds}",
)

inflight_by_phash = app.Table(
    topics.INFLIGHT_TABLE,
    schema=_SCHEMA,
    extra_topic_configs=CHANGELOG_TOPIC_CONFIG,  # compacted hourly (streams/table_store.py)
    help="pHash -> {owner: ImageHashed, requested_at: epoch seconds, attempts, waiters: [ImageHashed]}",
)
