"""The operator console in a real headless Chromium, against a real gateway, a real webhook
dispatcher and a real loopback receiver: sign in, add an endpoint and watch its attempts,
redrive a dead letter until it is delivered, purge with a confirmation.

Screenshots go to ``$CONSOLE_SCREENSHOTS`` when it is set (``docs/console`` for the README:
``CONSOLE_SCREENSHOTS=docs/console pytest tests/gateway/test_console_page.py``), else to the
test's temporary folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Locator, Page, expect
from redis.asyncio import Redis

from bookgen_events import EventBus, Settings
from consumers.webhook import serve
from tests.support.events import progress
from tests.support.gateway import ADMIN_KEY, StartGateway
from tests.support.partitioned_gateway import running_gateway
from tests.support.waits import eventually
from tests.support.webhooks import Receiver, Reply

HOSTILE = "<img src=x onerror=window.pwned=1>"


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.asynccontextmanager
async def dispatcher(bus: EventBus, settings: Settings) -> AsyncIterator[None]:
    """``consume webhook`` as production runs it: the channel and the endpoint registry."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(bus, settings, stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def shown(page: Page, locator: Locator, count: int) -> None:
    """Refresh until ``locator`` matches ``count`` elements: the backend's work is awaited
    as a condition, not as the console's next poll."""

    async def there() -> bool:
        await page.click("#refresh")
        return await locator.count() == count

    await eventually(there, 10, f"{count} of {locator}", step=0.1)


async def sign_in(page: Page, base: str) -> None:
    """Open the console and sign in with the keyboard (the key field has the focus)."""
    await page.goto(f"{base}/console")
    await expect(page.locator("#admin-key")).to_be_focused()
    await page.keyboard.type(ADMIN_KEY)
    await page.keyboard.press("Enter")
    await expect(page.locator("#app")).to_be_visible()


async def test_sign_in_add_an_endpoint_and_watch_its_attempts(
    browser: Browser,
    start_gateway: StartGateway,
    admin_settings: Settings,
    bus: EventBus,
    receiver: Receiver,
    shots: Path,
) -> None:
    """A wrong key is refused on the page; the right one shows the groups; an endpoint added
    in the form shows its secret once, and its delivered attempt appears with code and
    latency; disable flips its state."""
    gateway = await start_gateway(admin_settings)
    page = await browser.new_page(viewport={"width": 1280, "height": 860})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)

    await page.goto(f"{gateway.http}/console")
    await page.fill("#admin-key", "wrong-key")
    await page.click("#sign-in")
    await expect(page.locator("#login-error")).to_contain_text("wrong API key")
    await expect(page.locator("#app")).to_be_hidden()
    await page.fill("#admin-key", "")
    await sign_in(page, gateway.http)
    groups = page.locator("#groups-table tbody tr")
    await expect(groups.filter(has_text="webhook")).to_have_count(1)
    await expect(page.locator('#groups-table tr[data-group="logger"]')).to_have_count(2)

    await page.click('#nav a[data-view="endpoints"]')
    await expect(page.locator("#endpoints-empty")).to_be_visible()
    await page.click("#add-endpoint summary")
    await page.fill("#ep-url", receiver.url("billing"))
    await page.fill("#ep-description", "Billing team")
    await page.check('input[name="ep-type"][value="job.progress"]')
    await page.click("#ep-add")
    secret = page.locator("#secret-value")
    await expect(secret).to_have_text(re.compile(r"^whsec_"))
    await page.click("#secret-done")
    await expect(secret).to_have_text("")  # shown once, then gone from the page
    row = page.locator("#endpoints-table tbody tr")
    await expect(row).to_have_count(1)
    await expect(row).to_have_attribute("data-state", "enabled")

    async with dispatcher(bus, admin_settings):
        await bus.emit({"type": "progress_update", "job_id": "42", "data": {"progress": 30}})
        await row.locator('[data-action="attempts"]').click()
        attempt = page.locator('#attempts-table tbody tr[data-status="delivered"]')
        await shown(page, attempt, 1)
        await expect(attempt.locator("td").nth(2)).to_have_text("200")
        await expect(attempt.locator("td").nth(3)).to_have_text(re.compile(r"^\d+ ms$"))
    assert len(receiver.at("billing")) == 1
    await page.screenshot(path=shots / "endpoints.png", animations="disabled")

    await row.locator('[data-action="disable"]').click()
    await expect(row).to_have_attribute("data-state", "disabled")
    await page.select_option("#ep-state", "enabled")
    await expect(page.locator("#endpoints-empty")).to_have_text("No endpoint matches the filter.")
    assert not [p for p in problems if "Content Security Policy" in p], problems


async def test_redrive_a_dead_letter_until_delivered_then_purge_with_confirmation(
    browser: Browser,
    start_gateway: StartGateway,
    admin_settings: Settings,
    bus: EventBus,
    receiver: Receiver,
    shots: Path,
) -> None:
    """A refused delivery shows up as a dead letter with its reason and payload (as text);
    Redrive delivers it; Purge all asks first, Cancel keeps the letters, Confirm deletes."""
    gateway = await start_gateway(admin_settings)
    receiver.script("gone", [Reply(410)], then=Reply(200))
    receiver.script("dead", [], then=Reply(410))
    page = await browser.new_page(viewport={"width": 1280, "height": 860})
    await sign_in(page, gateway.http)

    async with dispatcher(bus, admin_settings):
        await bus.emit(progress(HOSTILE, receiver.url("gone")))
        await page.click('#nav a[data-view="dead-letters"]')
        await expect(page.locator("#dlq-channel")).to_have_value("webhook")
        letter = page.locator("#dlq-table tbody tr")
        await shown(page, letter, 1)
        await expect(page.locator("#dlq-badge")).to_have_text("1")
        await expect(letter).to_contain_text("HTTP 410")
        await letter.locator("summary").click()
        await expect(letter.locator("pre.payload")).to_contain_text(HOSTILE)
        assert await page.locator("#dlq-table img").count() == 0
        assert await page.evaluate("window.pwned") is None
        await page.screenshot(path=shots / "dead-letters.png", animations="disabled")

        event_id = await letter.get_attribute("data-event")
        await letter.locator('[data-action="redrive"]').click()
        await expect(page.locator("#dlq-empty")).to_be_visible()
        await eventually(lambda: receiver.accepted[event_id or ""] == 1, 10, "the redelivery")

        for job in ("1", "2"):
            await bus.emit(progress(job, receiver.url("dead")))
        await shown(page, letter, 2)

    await page.click("#dlq-purge-all")
    dialog = page.locator("#confirm-dialog")
    await expect(dialog).to_be_visible()
    await expect(page.locator("#confirm-cancel")).to_be_focused()
    await page.keyboard.press("Enter")  # the focused, safe choice: Cancel
    await expect(dialog).to_be_hidden()
    await expect(letter).to_have_count(2)
    assert await bus.redis.xlen(bus.names.dlq("webhook")) == 2

    await page.click("#dlq-purge-all")
    await page.click("#confirm-ok")
    await expect(page.locator("#dlq-empty")).to_be_visible()
    assert await bus.redis.xlen(bus.names.dlq("webhook")) == 0


@pytest.mark.slow  # the routes are covered in test_console_api.py; this is the form
async def test_replay_counts_first_and_the_log_pages(
    browser: Browser,
    start_gateway: StartGateway,
    admin_settings: Settings,
    bus: EventBus,
    shots: Path,
) -> None:
    """The replay form's dry run says how many events match; a bad offset is named."""
    gateway = await start_gateway(admin_settings)
    first = await bus.emit(progress("7"))
    await bus.emit(progress("8"))
    page = await browser.new_page(viewport={"width": 1280, "height": 860})
    await sign_in(page, gateway.http)
    await page.click('#nav a[data-view="replay"]')
    await page.fill("#rp-from", "yesterday")
    await page.click("#replay-dry")
    await expect(page.locator("#replay-error")).to_contain_text("from:")
    await page.fill("#rp-from", first)
    await page.fill("#rp-job", "7")
    await page.click("#replay-dry")
    await expect(page.locator("#replay-result")).to_contain_text(
        "1 of 2 events would be redelivered"
    )
    await expect(page.locator("#replay-error")).to_be_hidden()
    assert await bus.redis.zcard(bus.names.scheduled("webhook")) == 0
    await page.screenshot(path=shots / "replay.png", animations="disabled")

    await page.click('#nav a[data-view="log"]')
    await expect(page.locator("#log-empty")).to_be_visible()  # nothing logged: no logger ran
    await page.fill("#log-job", "7")
    await page.click("#log-search")
    await expect(page.locator("#log-empty")).to_be_visible()
    await expect(page.locator("#log-next")).to_be_disabled()


async def test_groups_are_shown_per_partition(
    browser: Browser, redis: Redis, admin_settings: Settings
) -> None:
    """STREAM_PARTITIONS=3: each partition's streams get their own rows, each labelled with
    its partition, with that partition's lag."""
    settings = admin_settings.model_copy(update={"stream_partitions": 3})
    bus = EventBus.from_settings(redis, settings)
    await bus.check_layout()
    for part in bus.partitions:
        await part.ensure_group("webhook", start="0")
    await bus.emit_many([progress(f"job-{i}") for i in range(12)])
    async with running_gateway(bus, settings) as gateway:
        page = await browser.new_page()
        await sign_in(page, gateway.http)
        rows = page.locator('#groups-table tr[data-group="webhook"]')
        await shown(page, rows, 3)
        labels = await rows.locator(".partition").all_text_contents()
        assert sorted(labels) == ["partition 0", "partition 1", "partition 2"]
        lags = [int(t) for t in await rows.locator("td.num .pill").all_text_contents()]
        assert len(lags) == 3 and sum(lags) == 12 and all(lag > 0 for lag in lags)
