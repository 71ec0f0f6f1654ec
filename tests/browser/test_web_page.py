"""The web page at / in a real browser, against the API on the real stack.

The photo tests need the real worker (the ``pipeline`` fixture of tests/conftest.py: stack, simulator and a
Faust worker). The non-image test needs the stack only: the S3 server refuses the upload by its POST policy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from playwright.async_api import Page, expect
from pydantic import SecretStr

from models.settings import Settings
from tests import samples
from tests.api.live import running_api

pytestmark = [pytest.mark.browser, pytest.mark.stack]


@pytest.fixture
async def api_url(settings_factory: Callable[..., Settings]) -> AsyncIterator[str]:
    async with running_api(settings_factory(api_token_secret=SecretStr("browser-secret"))) as base:
        yield base


@pytest.fixture
async def pipeline_api_url(pipeline: Any) -> AsyncIterator[str]:
    """The API on the same settings as the running worker."""
    async with running_api(pipeline.settings) as base:
        yield base


async def choose(page: Page, name: str, mime: str, data: bytes) -> None:
    await page.set_input_files("#file", files=[{"name": name, "mimeType": mime, "buffer": data}])


async def test_a_non_image_is_refused_with_a_visible_error(page: Page, api_url: str) -> None:
    await page.goto(api_url)
    await choose(page, "notes.txt", "text/plain", b"this is not a photo\n")
    error = page.locator("#error")
    await expect(error).to_be_visible()
    await expect(page.locator("#error-code")).to_contain_text("UPLOAD_REJECTED")
    await expect(page.locator("#error-message")).to_contain_text("Only images")
    await expect(page.locator("#status")).to_have_attribute("data-state", "error")
    await expect(page.locator("#result")).to_be_hidden()


@pytest.mark.pipeline
async def test_a_photo_shows_its_result_and_the_photo_from_the_cdn(
    page: Page, pipeline_api_url: str, pipeline: Any
) -> None:
    await page.goto(pipeline_api_url)
    await choose(page, "photo.jpg", "image/jpeg", samples.photo_bytes(7))
    await expect(page.locator("#status")).to_have_attribute("data-state", "done", timeout=60_000)
    await expect(page.locator("#error")).to_be_hidden()
    for field in ("#category", "#item", "#disposal", "#recyclable", "#confidence", "#cache", "#model"):
        await expect(page.locator(field)).not_to_be_empty()
    # The stack's model is the simulator: the page must say so, not pass its guess off as a real answer.
    await expect(page.locator("#model")).to_contain_text("(simulator)")
    await expect(page.locator("#simulated")).to_be_visible()
    await expect(page.locator("#cache")).to_contain_text("(")  # "hit (redis)" or "miss (model)"
    photo = page.locator("#photo")
    assert (await photo.get_attribute("src") or "").startswith(pipeline.settings.cdn_base_url + "/")
    await page.wait_for_function(
        "() => { const img = document.getElementById('photo'); return img.complete && img.naturalWidth > 0; }"
    )
    await expect(page.locator("#photo-note")).to_be_empty()


@pytest.mark.pipeline
async def test_the_same_photo_again_is_a_cache_hit(page: Page, pipeline_api_url: str) -> None:
    photo = samples.photo_bytes(8)
    await page.goto(pipeline_api_url)
    for _ in range(2):
        await choose(page, "again.jpg", "image/jpeg", photo)
        await expect(page.locator("#status")).to_have_attribute("data-state", "done", timeout=60_000)
    await expect(page.locator("#cache")).to_have_attribute("data-hit", "true")
    await expect(page.locator("#cache")).to_contain_text("hit")


@pytest.mark.pipeline
async def test_an_undecodable_image_shows_the_pipeline_error(page: Page, pipeline_api_url: str) -> None:
    await page.goto(pipeline_api_url)
    await choose(page, "broken.jpg", "image/jpeg", b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    await expect(page.locator("#error")).to_be_visible(timeout=60_000)
    await expect(page.locator("#error-code")).to_have_text("IMAGE_UNDECODABLE")
    await expect(page.locator("#error-message")).not_to_be_empty()
