"""Files that are not images, planted in the bucket, never run script in a browser that opens them from the CDN
edge: the edge refuses non-image types (403) and sends nosniff and a sandbox CSP with everything it serves."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from playwright.async_api import Page

from models.settings import Settings
from streams.clients import s3_client
from tools.kit import free_port

pytestmark = [pytest.mark.browser, pytest.mark.stack]


@pytest.fixture
async def beacon() -> AsyncIterator[tuple[str, list[str]]]:
    """A local server that records every request a planted script makes to it."""
    hits: list[str] = []

    async def record(request: web.Request) -> web.Response:
        hits.append(request.path_qs)
        return web.Response(text="ok", headers={"Access-Control-Allow-Origin": "*"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", hits
    finally:
        await runner.cleanup()


def payloads(beacon_url: str) -> list[tuple[str, str, bytes]]:
    """(suffix, Content-Type stored in S3, body): each one runs script if a browser treats it as a document."""
    script = f"document.title='pwned';fetch('{beacon_url}/ran?'+location.pathname)"
    html = f"<!doctype html><html><body><h1>free hosting</h1><script>{script}</script></body></html>".encode()
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" onload="{script}"><script>{script}</script>'
           '<circle r="9"/></svg>').encode()
    return [
        (".html", "text/html", html),
        (".svg", "image/svg+xml", svg),
        (".jpg", "image/jpeg", html),  # HTML stored as an image: only sniffing would run it
        (".png", "image/png", svg),
        ("", "", html),  # no type at all
    ]


async def test_planted_html_and_svg_never_run_script_from_the_edge(
    page: Page, beacon: tuple[str, list[str]], settings_factory: Callable[..., Settings]
) -> None:
    beacon_url, hits = beacon
    settings = settings_factory()
    planted = []
    async with s3_client(settings) as s3:
        for suffix, content_type, body in payloads(beacon_url):
            key = f"uploads/{uuid.uuid4().hex}{suffix}"
            extra = {"ContentType": content_type} if content_type else {}
            await s3.put_object(Bucket=settings.s3_bucket_name, Key=key, Body=body, **extra)
            planted.append((key, content_type))
    try:
        for key, content_type in planted:
            response = await page.goto(f"{settings.cdn_base_url}/{key}")
            assert response is not None
            headers = response.headers
            assert headers.get("x-content-type-options") == "nosniff", (key, headers)
            if not content_type.startswith(("image/jpeg", "image/png")):
                assert response.status == 403, (key, content_type, response.status)
            else:  # served as the image type it claims, in a sandbox: a broken image, never a document
                assert response.status == 200 and "sandbox" in headers.get("content-security-policy", "")
            assert await page.title() != "pwned", key
        # A page of our own that does run script proves the beacon would have seen a planted one.
        control = await page.context.new_page()
        await control.set_content(f"<script>fetch('{beacon_url}/control')</script>")
        async with asyncio.timeout(60):  # a condition wait: a busy machine's Chromium may take more than seconds
            while "/control" not in hits:
                await control.wait_for_timeout(100)
        assert [h for h in hits if h.startswith("/ran")] == [], hits
    finally:
        async with s3_client(settings) as s3:
            for key, _ in planted:
                await s3.delete_object(Bucket=settings.s3_bucket_name, Key=key)
