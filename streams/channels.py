"""Faust declarations of the topics named in :mod:`streams.topics`.

Every topic carries raw bytes (plain JSON encoded by the models) and a UTF-8 key, so producers that are not
Faust can write and read them. Partition counts come from settings (``TOPIC_PARTITIONS``) at configure time;
the pHash-keyed topics must have equal counts, so their partitions and the tables' changelogs line up.
"""

from __future__ import annotations

from streams import topics
from streams.app import app


def _topic(name: str):  # type: ignore[no-untyped-def]
    # internal=True makes the worker create the topic at start-up with TOPIC_PARTITIONS partitions; left to
    # the broker's auto-creation, the pHash-keyed topics would get one partition and stop lining up with the
    # tables' changelogs.
    return app.topic(name, key_type=str, value_type=bytes, key_serializer="raw", value_serializer="raw",
                     internal=True)


uploads_completed_topic = _topic(topics.UPLOADS_COMPLETED)
images_hashed_topic = _topic(topics.IMAGES_HASHED)
vision_requests_topic = _topic(topics.VISION_REQUESTS)
analysis_results_topic = _topic(topics.ANALYSIS_RESULTS)
dead_letter_topic = _topic(topics.DEAD_LETTER)
dedupe_maintenance_topic = _topic(topics.DEDUPE_MAINTENANCE)
storage_events_topic = _topic(topics.STORAGE_EVENTS)
