"""TABLE_STORE and TABLE_STANDBY_REPLICAS reach Faust's configuration (streams/table_store.py)."""

from __future__ import annotations

import types

import pytest
from faust.stores import rocksdb

from models.settings import Settings
from streams import table_store


@pytest.fixture
def rocksdb_defaults():  # type: ignore[no-untyped-def]
    saved = {name: getattr(rocksdb.RocksDBOptions, name)
             for name in ("write_buffer_size", "max_write_buffer_number", "block_cache_size")}
    yield
    for name, value in saved.items():
        setattr(rocksdb.RocksDBOptions, name, value)


def configured(**fields: object) -> types.SimpleNamespace:
    conf = types.SimpleNamespace()
    table_store.configure(conf, Settings(_env_file=None, **fields))  # type: ignore[arg-type, call-arg]
    return conf


def test_memory_store_and_standby_replicas() -> None:
    conf = configured(table_store="memory", table_standby_replicas=0)
    assert conf.store == "memory://"
    assert conf.table_standby_replicas == 0


def test_rocksdb_store_bounds_each_partition_database(rocksdb_defaults) -> None:  # type: ignore[no-untyped-def]
    conf = configured(table_store="rocksdb", worker_web_port=6070)
    assert conf.store == "rocksdb://"
    assert conf.tabledir == "tables-6070"  # one per live worker of a machine, the same again after a restart
    assert conf.table_standby_replicas == 1  # the default: a dead worker's partitions are held elsewhere too
    options = rocksdb.RocksDBOptions()  # what Faust opens every partition's database with
    assert options.use_rocksdict, "rocksdict is a dependency: Faust would fall back to python-rocksdb"
    assert options.block_cache_size == table_store.ROCKSDB_BLOCK_CACHE_BYTES < 2 * 1024**3
    assert options.write_buffer_size * options.max_write_buffer_number <= 32 * 1024 * 1024


def test_the_setting_refuses_unknown_stores_and_negative_replicas() -> None:
    with pytest.raises(ValueError):
        Settings(_env_file=None, table_store="aerospike")  # type: ignore[call-arg, arg-type]
    with pytest.raises(ValueError):
        Settings(_env_file=None, table_standby_replicas=-1)  # type: ignore[call-arg]
