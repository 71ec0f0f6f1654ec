"""A real headless Chromium driven by Playwright (scripts/install_chromium.sh installs it).

Debian's package (/usr/bin/chromium), else Playwright's own build where the distribution has none (Ubuntu),
or ``CHROMIUM=/path/to/chrome``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = Path(os.environ.get("CHROMIUM") or "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        if CHROMIUM.exists():
            executable: str | None = str(CHROMIUM)
        elif "CHROMIUM" not in os.environ and Path(playwright.chromium.executable_path).exists():
            executable = None  # Playwright's own build (a distribution without a Chromium package)
        else:
            pytest.fail(f"Chromium is missing at {CHROMIUM}: run scripts/install_chromium.sh")
        chromium = await playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        await context.close()
