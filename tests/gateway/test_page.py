"""The live page in a real headless Chromium: progress bar, list, reconnect-and-resume."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright, expect

from bookgen_events import EventBus, Settings

from .conftest import StartGateway, progress, token

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture
def chromium() -> str:
    # Never skip: without the Debian package the page is untested, which must be loud.
    assert CHROMIUM.exists(), "install Chromium: apt-get install -y chromium"
    return str(CHROMIUM)


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def test_page_shows_progress_and_resumes_after_a_drop(
    browser: Browser, start_gateway: StartGateway, gw_settings: Settings, bus: EventBus
) -> None:
    """Enter job + token, watch the bar move; events sent while the gateway is down arrive after it returns."""
    gateway = await start_gateway(gw_settings)
    page = await browser.new_page()
    await page.goto(f"{gateway.http}/")
    await page.fill("#job-id", "page-job")
    await page.fill("#token", token(jobs=("page-job",)))
    await page.click("#connect")
    await expect(page.locator("#status")).to_have_text("live")

    await bus.emit(progress("page-job", 10.0))
    await expect(page.locator("#bar")).to_have_attribute("style", "width: 10%;")
    await bus.emit(progress("page-job", 60.0))
    await expect(page.locator("#percent")).to_have_text("60")

    gateway.stop.set()  # a real drop: the server goes away
    await gateway.task
    await expect(page.locator("#status")).to_contain_text("reconnecting")
    missed = await bus.emit(progress("page-job", 80.0))
    await bus.emit({"type": "completion", "job_id": "page-job", "data": {"biography_id": 7}})

    await start_gateway(gw_settings, port=gateway.port)
    await expect(page.locator("#percent")).to_have_text("100", timeout=15_000)
    await expect(page.locator("#status")).to_have_text("live")
    items = page.locator("#feed li")
    await expect(items).to_have_count(4)
    ids = await items.evaluate_all("els => els.map(e => e.dataset.id)")
    assert missed in ids and len(set(ids)) == 4
    assert (await items.first.inner_text()).startswith("completion")
