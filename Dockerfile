# Image for the project's Python services (api, worker, simulator, s3-init) in docker-compose.kafka.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . .
# constraints.txt pins the exact versions the project is tested with.
# /data/worker: the worker's Faust data dir (its RocksDB tables, TABLE_STORE=rocksdb), a volume in the compose
# file so a restarted container keeps its tables instead of replaying the changelogs.
RUN pip install -c constraints.txt . \
    && useradd --create-home --uid 10001 app \
    && mkdir -p /data/worker && chown app /data/worker
USER app

CMD ["python", "-m", "api"]
