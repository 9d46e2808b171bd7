"""Debian's Chromium driven by Playwright, for the pages' tests (never a downloaded browser)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def installed() -> str:
    # Never skip: without the Debian package the pages are untested, which must be loud.
    assert os.path.exists(CHROMIUM), "install Chromium: apt-get install -y chromium"
    return CHROMIUM


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium, closed when the block ends."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=installed(), args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """The pages' tests' browser (reaches every folder through ``tests/conftest.py``)."""
    async with chromium() as launched:
        yield launched
