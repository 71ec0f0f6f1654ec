"""Factories for the external clients, shared by the worker, the API, the tools and the tests."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from models.settings import Settings


def s3_client(
    settings: Settings, *, endpoint_url: str | None = None, pool: int = 32
) -> AbstractAsyncContextManager[Any]:
    """An aiobotocore S3 client (SigV4, path-style) as an async context manager."""
    return get_session().create_client(
        "s3",
        region_name=settings.aws_region,
        endpoint_url=endpoint_url or settings.s3_endpoint_url,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key.get_secret_value(),
        config=AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=settings.fetch_timeout_seconds,
            read_timeout=settings.fetch_timeout_seconds,
            retries={"max_attempts": 2, "mode": "standard"},
            max_pool_connections=pool,
        ),
    )
