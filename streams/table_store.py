"""Where a worker keeps its Faust tables (``TABLE_STORE``) and how many standby copies it reads.

- ``memory``: a Python dict per table, rebuilt from the changelog topic on every start. Memory and start time grow
  with the number of cached photos (docs/SCALING.md, "Tables": about 3 KB and 0.3 ms of replay per entry here).
- ``rocksdb``: one RocksDB database per table partition under the worker's data dir
  (``{datadir}/v1/tables-{WORKER_WEB_PORT}/{table}.db/{partition}``, Faust's ``tabledir``). A restarted worker
  reads only the changelog written since its last run (RocksDB keeps the offset it applied), so it answers again in
  seconds whatever the table's size; memory is bounded by the write buffers and block cache set below, not by the
  table. A worker restarted on another machine, or with an empty data dir, replays the changelog once (cold start).
  The folder is named after the worker's web port, which no two live workers of a machine share: workers started
  with one ``--datadir`` (the tests, the chaos suite) keep separate databases instead of waiting on each other's
  RocksDB locks, and a worker restarted with its settings finds its own again.

Standby replicas (``TABLE_STANDBY_REPLICAS``, default 1): another worker of the group also reads each table
partition's changelog, so when the owner dies the partition moves to a worker that already holds it instead of one
that replays it (measured at 100k cached photos: answering again 7 s after a kill -9 instead of 18 s). The cost is
a second copy of each partition on another worker. With one worker it has no effect. On RocksDB the timers' sweeps
read the active partitions only; on ``memory`` a standby copy shares the dict with them, so sweeps also ask about
its entries (the owner's partition acts, and its checks make a repeated command a no-op).
"""

from __future__ import annotations

from typing import Any

from models.settings import Settings

# Per RocksDB database (one per table partition: 2 tables x TOPIC_PARTITIONS of them per worker). Faust's defaults
# are 64 MiB x 3 write buffers and a 2 GiB block cache each: a cold start that replays a large changelog then fills
# up to ~200 MiB of memtables per partition, and reads fill the caches with the table. These bound a worker's
# RocksDB memory to about (8 MiB x 2 + 16 MiB) x 2 x partitions, 256 MiB at 4 partitions, whatever the table's size.
ROCKSDB_WRITE_BUFFER_BYTES = 8 * 1024 * 1024
ROCKSDB_MAX_WRITE_BUFFERS = 2
ROCKSDB_BLOCK_CACHE_BYTES = 16 * 1024 * 1024


# The tables' changelog topics are compacted (Faust's cleanup.policy=compact), but Kafka compacts only closed
# segments and the broker rolls one after 7 days (or 1 GiB): a worker that starts without its RocksDB (a new
# machine, a lost disk, a standby catching up) would replay a week of every write, tombstones of answered calls
# included. Rolling hourly lets the cleaner reduce each log to its live keys (and the last day's tombstones).
# Applied when Faust (or tools/table_recovery.py) creates the topic; existing topics keep theirs.
CHANGELOG_TOPIC_CONFIG = {"segment.ms": str(3600 * 1000)}


def store_url(settings: Settings) -> str:
    return "rocksdb://" if settings.table_store == "rocksdb" else "memory://"


def configure(conf: Any, settings: Settings) -> None:
    """Apply TABLE_STORE and TABLE_STANDBY_REPLICAS to a Faust app's configuration (streams/app.py)."""
    conf.store = store_url(settings)
    conf.table_standby_replicas = settings.table_standby_replicas
    if settings.table_store == "rocksdb":
        conf.tabledir = f"tables-{settings.worker_web_port}"  # relative to {datadir}/v1
        bound_rocksdb_memory()


def bound_rocksdb_memory() -> None:
    """Faust opens every partition's database with ``RocksDBOptions()``: set its class defaults (tables are
    declared at import, before settings are read, so they cannot pass per-table ``options``)."""
    from faust.stores import rocksdb

    if not rocksdb.USE_ROCKSDICT and rocksdb.rocksdb is None:
        raise RuntimeError("TABLE_STORE=rocksdb needs the rocksdict package (pip install -c constraints.txt -e .)")
    rocksdb.RocksDBOptions.write_buffer_size = ROCKSDB_WRITE_BUFFER_BYTES
    rocksdb.RocksDBOptions.max_write_buffer_number = ROCKSDB_MAX_WRITE_BUFFERS
    rocksdb.RocksDBOptions.block_cache_size = ROCKSDB_BLOCK_CACHE_BYTES
