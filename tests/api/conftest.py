"""API tests without Kafka, Redis or S3: the app gets the fakes of ``fakes.py`` via ``create_app(backends=...)``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from api.app import create_app
from models.settings import Settings
from tests.api.fakes import ALLOWED_ORIGIN, SECRET, Fakes


@pytest.fixture
def settings() -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        app_env="development",
        api_token_secret=SecretStr(SECRET),
        cors_origins=[ALLOWED_ORIGIN],
        cdn_base_url="http://cdn.test/waste-images",
        upload_max_bytes=1_000_000,
    )


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def client(
    aiohttp_client: ClientFactory, settings: Settings, fakes: Fakes
) -> TestClient[web.Request, web.Application]:
    return await aiohttp_client(create_app(settings, backends=fakes.backends()))
