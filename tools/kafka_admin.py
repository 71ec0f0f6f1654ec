"""Kafka housekeeping before a worker starts: the pipeline's topics, and where a new consumer group begins.

``create-topics``: every topic of :mod:`streams.topics` with ``TOPIC_PARTITIONS`` partitions, replication factor
``TOPIC_REPLICATION_FACTOR`` and ``min.insync.replicas`` (``Settings.min_insync_replicas``) (idempotent; run by
``scripts/stack.sh up``). Left to the broker's auto-creation, whichever client touches a topic first creates it
with the broker's default of one partition.

``start-at-end GROUP``: commit GROUP's offsets at the current end of every topic the worker reads. A new
deployment (a test session, a benchmark, the demo) then ignores what earlier ones left in the shared topics,
while the worker runs with ``KAFKA_AUTO_OFFSET_RESET=earliest``. Starting the group with ``latest`` instead is
not safe: an internal partition (hashed images, vision requests) that has no committed offset yet when a
rebalance happens is reset to its end, and the events waiting there are skipped: jobs that never get a result.

    python -m tools.kafka_admin create-topics
    python -m tools.kafka_admin start-at-end waste-demo-1234
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import sys

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from models.settings import Settings
from streams import kafka_security, topics

# Partitions of these line up with each other and with the dedupe tables' changelogs.
PHASH_KEYED = (topics.IMAGES_HASHED, topics.VISION_REQUESTS, topics.DEDUPE_MAINTENANCE)


async def create_topics(settings: Settings, names: tuple[str, ...] = topics.ALL_TOPICS,
                        timeout: float = 30.0) -> dict[str, int]:
    """Create the missing topics; returns every topic's partition count (a pre-existing topic keeps its own)."""
    admin = AIOKafkaAdminClient(**kafka_security.client_kwargs(settings, "admin"))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        # Replicated as TOPIC_REPLICATION_FACTOR says (3 on the three-broker stack), with min.insync.replicas (2 of 3):
        # an acks=all write is then on two brokers before it is acknowledged.
        missing = [NewTopic(name, num_partitions=settings.topic_partitions,
                            replication_factor=settings.topic_replication_factor,
                            topic_configs={"min.insync.replicas": str(settings.min_insync_replicas)})
                   for name in names if name not in existing]
        if missing:
            response = await admin.create_topics(missing)
            for topic, code, *rest in response.topic_errors:
                # 36: created by someone else meanwhile (a producer's auto-creation, another start-up)
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise RuntimeError(f"creating topic {topic} failed: error {code} {rest[0] if rest else ''}")
    finally:
        await admin.close()
    # The broker's metadata may lag the creation by a moment.
    deadline = asyncio.get_running_loop().time() + timeout
    while len(counts := await partition_counts(settings, names)) < len(names):
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"topics still missing after {timeout}s: {sorted(set(names) - counts.keys())}")
        await asyncio.sleep(0.2)
    return counts


async def partition_counts(settings: Settings, names: tuple[str, ...]) -> dict[str, int]:
    """Partition counts of the topics in ``names`` that exist."""
    admin = AIOKafkaAdminClient(**kafka_security.client_kwargs(settings, "admin"))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [name for name in names if name in existing]
        described = await admin.describe_topics(wanted) if wanted else []
        return {d["topic"]: len(d["partitions"]) for d in described}
    finally:
        await admin.close()


async def start_group_at_end(settings: Settings, group_id: str | None = None,
                             names: tuple[str, ...] = topics.WORKER_SOURCES) -> dict[str, int]:
    """Commit ``group_id``'s offsets (default: APP_ID) at the end of ``names``; returns the events skipped per topic.

    The group must have no live members (run it before the worker starts).
    """
    partitions = [TopicPartition(name, p) for name, count in (await partition_counts(settings, names)).items()
                  for p in range(count)]
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(**kafka_security.client_kwargs(settings, "admin"),
                                group_id=group_id or settings.app_id, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.commit({tp: offset for tp, offset in ends.items()})
        skipped: dict[str, int] = {}
        for tp, offset in ends.items():
            skipped[tp.topic] = skipped.get(tp.topic, 0) + offset
        return skipped
    finally:
        await consumer.stop()


async def group_lag(settings: Settings, group_id: str | None = None,
                    names: tuple[str, ...] = topics.WORKER_SOURCES) -> dict[str, dict[int, int]]:
    """Events not yet committed by ``group_id`` (default: APP_ID), per topic and partition (end - committed).

    A partition whose lag stays above 0 while the group is idle is one nobody consumes (diagnostics).
    """
    partitions = [TopicPartition(name, p) for name, count in (await partition_counts(settings, names)).items()
                  for p in range(count)]
    admin = AIOKafkaAdminClient(**kafka_security.client_kwargs(settings, "admin"))
    consumer = AIOKafkaConsumer(**kafka_security.client_kwargs(settings, "admin"), enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group_id or settings.app_id, partitions=partitions)
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
        await admin.close()
    lag: dict[str, dict[int, int]] = {}
    for tp, end in ends.items():
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else 0
        lag.setdefault(tp.topic, {})[tp.partition] = end - done
    return lag


async def position_at_end(consumer: AIOKafkaConsumer, timeout: float = 30.0) -> None:
    """Wait for a group-less consumer's partitions and fix its position at their current end.

    "latest" is resolved lazily: a consumer that has not fetched yet would miss what is published right after
    it started. Resolving the positions now means everything published from here on is seen.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while not consumer.assignment():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"consumer of {sorted(consumer.subscription())} got no partitions in {timeout}s")
        await asyncio.sleep(0.05)
    await consumer.seek_to_end()
    for tp in consumer.assignment():
        await consumer.position(tp)


def start_group_at_end_blocking(settings: Settings, group_id: str | None = None) -> dict[str, int]:
    """:func:`start_group_at_end` for synchronous callers, also from inside a running event loop."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, start_group_at_end(settings, group_id)).result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.kafka_admin", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("create-topics", help="create the pipeline's topics with TOPIC_PARTITIONS partitions")
    start = commands.add_parser("start-at-end", help="commit a new group's offsets at the end of its topics")
    start.add_argument("group", nargs="?", help="consumer group (default: APP_ID)")
    args = parser.parse_args(argv)
    settings = Settings()  # type: ignore[call-arg]  # from the environment
    if args.command == "create-topics":
        counts = asyncio.run(create_topics(settings))
        print(json.dumps({"partitions": counts}))
        wrong = {name: counts.get(name) for name in PHASH_KEYED if counts.get(name) != settings.topic_partitions}
        if wrong:
            print(f"error: {wrong}: the pHash-keyed topics need TOPIC_PARTITIONS={settings.topic_partitions} "
                  f"partitions, like the tables' changelogs the worker creates; delete and recreate them",
                  file=sys.stderr)
            return 1
    else:
        print(json.dumps({"group": args.group or settings.app_id,
                          "offsets_at_end": asyncio.run(start_group_at_end(settings, args.group))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
