"""The near index's chunk layout at the ends of its range, and the key names the worker's index uses (no prefix)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from streams.near_index import RedisNearIndex, layout_for, layout_tag, redis_index

PHASH = "0123456789abcdef" * 4


def test_the_largest_distance_has_one_chunk_of_four_bits_per_bit_allowed() -> None:
    layout = layout_for(63)
    assert layout.chunks == 64 and {w for _, w in layout.spans} == {4}
    assert layout_for(0).spans == ((0, 256),)


@pytest.mark.parametrize("distance", [-1, 64, 100])
def test_a_distance_outside_the_range_is_refused_naming_the_range(distance: int) -> None:
    with pytest.raises(ValueError, match=r"^max_distance must be in 0\.\.63$"):
        layout_for(distance)


def test_the_workers_index_uses_the_documented_keys_without_a_prefix(settings_factory: Any) -> None:
    stub: Any = SimpleNamespace(register_script=lambda script: script)
    settings = settings_factory(near_duplicate_max_distance=4)
    tag = layout_tag(settings.model_version, layout_for(4))
    for index in (redis_index(stub, settings),
                  RedisNearIndex(stub, max_distance=4, model_version=settings.model_version, ttl_seconds=60,
                                 claim_ttl_seconds=5)):
        assert index.result_keys(PHASH)[0] == f"cache:image:mih:{{near}}:{tag}:0:0123456789abc"
        assert index.pending_keys(PHASH)[0] == f"cache:image:mihp:{{near}}:{tag}:0:0123456789abc"
