# Image for the project's Python services (api, worker, simulator, s3-init) in docker-compose.kafka.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . .
# constraints.txt pins the exact versions the project is tested with.
RUN pip install -c constraints.txt . \
    && useradd --create-home --uid 10001 app
USER app

CMD ["python", "-m", "api"]
