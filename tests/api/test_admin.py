"""Operator invalidation endpoint: disabled unless configured, token-protected, clear answers."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from api.app import create_app
from models.settings import Settings
from tests.api.fakes import Fakes

PHASH = "ab" * 32
ADMIN = "operator-secret"


@pytest.fixture
async def admin_client(aiohttp_client, settings: Settings, fakes: Fakes):  # type: ignore[no-untyped-def]
    configured = settings.model_copy(update={"api_admin_token": SecretStr(ADMIN)})
    return await aiohttp_client(create_app(configured, backends=fakes.backends()))


async def test_disabled_without_an_admin_token(client) -> None:  # type: ignore[no-untyped-def]
    resp = await client.delete(f"/api/v1/waste/admin/cache/{PHASH}", headers={"Authorization": "Bearer x"})
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "NOT_FOUND"


async def test_wrong_token_is_refused(admin_client) -> None:  # type: ignore[no-untyped-def]
    resp = await admin_client.delete(f"/api/v1/waste/admin/cache/{PHASH}", headers={"Authorization": "Bearer no"})
    assert resp.status == 403


async def test_invalidates_a_cached_result_once(admin_client, fakes: Fakes) -> None:  # type: ignore[no-untyped-def]
    fakes.cache_admin.cached.add(PHASH)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    first = await admin_client.delete(f"/api/v1/waste/admin/cache/{PHASH}", headers=headers)
    assert first.status == 200 and (await first.json()) == {"invalidated": [PHASH]}
    again = await admin_client.delete(f"/api/v1/waste/admin/cache/{PHASH}", headers=headers)
    assert again.status == 404 and (await again.json())["error"]["code"] == "NOT_CACHED"


async def test_needs_a_phash_or_a_job_id(admin_client) -> None:  # type: ignore[no-untyped-def]
    resp = await admin_client.delete("/api/v1/waste/admin/cache", headers={"Authorization": f"Bearer {ADMIN}"})
    assert resp.status == 400


