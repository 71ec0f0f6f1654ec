"""The real outside services: Redis, Kafka (producer and results consumer) and S3, each created once."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiokafka import AIOKafkaProducer
from redis.asyncio import BlockingConnectionPool, Redis

from api.cache_admin import RedisCacheAdmin
from api.context import Backends
from api.limits import RedisRateLimiter
from api.publisher import KafkaUploadPublisher
from api.results import KafkaResultsSource
from api.store import RedisJobStore
from api.uploads import S3Uploads
from models.settings import Settings
from streams import kafka_security, redis_client

log = logging.getLogger("api.backends")

REDIS_MAX_CONNECTIONS = 100


def job_ttl_seconds(settings: Settings) -> int:
    # A job must outlive its upload URL, and its record must last as long as its result.
    return max(settings.results_retention_seconds, settings.upload_url_expires_seconds + 300)


@asynccontextmanager
async def connect(settings: Settings) -> AsyncIterator[Backends]:
    async with AsyncExitStack() as stack:
        # Blocking pool: a burst of requests waits briefly for a connection instead of failing at once.
        if redis_client.is_cluster(settings.redis_url, settings.redis_cluster):
            redis = await redis_client.open_client(settings.redis_url, cluster=True, decode_responses=True,
                                                   max_connections=REDIS_MAX_CONNECTIONS)
        else:
            pool = BlockingConnectionPool.from_url(
                settings.redis_url, decode_responses=True, max_connections=REDIS_MAX_CONNECTIONS, timeout=5
            )
            redis = Redis.from_pool(pool)
        stack.push_async_callback(redis.aclose)

        # The api principal: may write uploads and read results, nothing else (tools/kafka_acls.py).
        # acks=all and idempotent (kafka_security.producer_kwargs): an accepted upload is on min.insync.replicas
        # brokers, and a send retried after a broker died is written once.
        producer = AIOKafkaProducer(
            **kafka_security.producer_kwargs(settings, "api"),
            client_id="waste-api",
            request_timeout_ms=15_000,
        )
        await producer.start()
        stack.push_async_callback(producer.stop)

        session = get_session()
        s3_config = AioConfig(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 2})
        common = {
            "region_name": settings.aws_region,
            "aws_access_key_id": settings.aws_access_key_id,
            "aws_secret_access_key": settings.aws_secret_access_key.get_secret_value(),
            "config": s3_config,
        }
        server_client = await stack.enter_async_context(
            session.create_client("s3", endpoint_url=settings.s3_endpoint_url, **common)
        )
        public_url = settings.api_public_s3_url or settings.s3_endpoint_url
        signing_client = server_client
        if public_url != settings.s3_endpoint_url:
            signing_client = await stack.enter_async_context(
                session.create_client("s3", endpoint_url=public_url, **common)
            )

        log.info(
            "backends ready: kafka=%s s3=%s public_s3=%s",
            settings.kafka_bootstrap_servers,
            settings.s3_endpoint_url,
            public_url,
        )
        yield Backends(
            store=RedisJobStore(redis, settings.results_retention_seconds, job_ttl_seconds(settings)),
            publisher=KafkaUploadPublisher(producer),
            storage=S3Uploads(
                server_client=server_client,
                signing_client=signing_client,
                bucket=settings.s3_bucket_name,
                max_bytes=settings.upload_max_bytes,
                expires_s=settings.upload_url_expires_seconds,
            ),
            results=KafkaResultsSource(settings.kafka_bootstrap_servers, settings.results_retention_seconds,
                                       security=kafka_security.security_kwargs(settings, "api")),
            cache_admin=RedisCacheAdmin(redis),
            ratelimit=RedisRateLimiter(redis),
        )
