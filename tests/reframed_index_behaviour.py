"""One behaviour suite for every reframed-tier index: the in-memory double (tests/doubles.py) and the Redis index
on a single Redis and on a Redis Cluster run the same tests.

Subclass :class:`ReframedIndexBehaviour` and give it an ``index`` fixture (word cap 3): tests/unit/test_reframed.py
(in memory) and tests/integration/test_index_behaviour_stack.py (Redis).
"""

from __future__ import annotations

from streams.reframed_index import ID_HEX, ReframedIndex

CAP = 3


def phash(n: int) -> str:
    return f"{n:02x}" * 32


class ReframedIndexBehaviour:
    async def test_votes_count_shared_words_and_features_come_back(self, index: ReframedIndex) -> None:
        await index.add(phash(1), b"blob-1", [7, 8, 9])
        await index.add(phash(2), b"blob-2", [9, 10])
        votes = await index.votes([7, 8, 9, 11])
        assert votes == {phash(1)[:ID_HEX]: 3, phash(2)[:ID_HEX]: 1}
        found = await index.features([phash(1)[:ID_HEX], phash(3)[:ID_HEX]])  # an unknown id is skipped
        assert found == [(phash(1), b"blob-1")]

    async def test_a_word_keeps_at_most_its_cap(self, index: ReframedIndex) -> None:
        for n in range(5):
            await index.add(phash(n), b"blob", [7, 8])
        votes = await index.votes([7, 8, 9])
        assert len(votes) == CAP and set(votes.values()) == {2}

    async def test_a_deleted_photo_has_no_features(self, index: ReframedIndex) -> None:
        await index.add(phash(4), b"blob-4", [12])
        await index.delete(phash(4))
        assert await index.features([phash(4)[:ID_HEX]]) == []
