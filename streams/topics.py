"""Topic names: the one place they are spelled. The API imports this module too, so it must stay free of Faust.

Keys: job_id for per-job topics; pHash after hashing, so every copy of one image lands on one partition and
deduplication needs no distributed lock.
"""

from __future__ import annotations

UPLOADS_COMPLETED = "waste.uploads.completed"  # key job_id; the input contract
IMAGES_HASHED = "waste.images.hashed"  # key phash
VISION_REQUESTS = "waste.vision.requests"  # key phash
ANALYSIS_RESULTS = "waste.analysis.results"  # key job_id; the output contract
DEAD_LETTER = "waste.dead-letter"  # key job_id when known
DEDUPE_MAINTENANCE = "waste.dedupe.maintenance"  # key phash; expiry and lost-call checks for the dedupe tables
STORAGE_EVENTS = "waste.storage.events"  # key object key (or none); the bucket's S3 event notifications

ALL_TOPICS = (UPLOADS_COMPLETED, IMAGES_HASHED, VISION_REQUESTS, ANALYSIS_RESULTS, DEAD_LETTER, DEDUPE_MAINTENANCE,
              STORAGE_EVENTS)

# The dedupe step's Faust tables (streams/tables.py); their changelogs are "{APP_ID}-{name}-changelog".
RESULTS_TABLE = "results-by-phash"
INFLIGHT_TABLE = "inflight-by-phash"

# The topics a worker's consumer group reads (it writes the results and dead-letter topics, and upload-complete
# events for the storage notifications it turns into jobs).
WORKER_SOURCES = (UPLOADS_COMPLETED, IMAGES_HASHED, VISION_REQUESTS, DEDUPE_MAINTENANCE, STORAGE_EVENTS)
