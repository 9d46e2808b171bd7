"""The live page in a real headless Chromium: history, progress, job state, reconnect-and-resume."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from playwright.async_api import Browser, Page, expect
from redis.asyncio import Redis

from bookgen_events import EventBus, Settings
from tests.support.events import live_progress
from tests.support.gateway import StartGateway, token


def status_change(job_id: str, old: str | None, new: str) -> dict[str, Any]:
    return {
        "type": "status_change",
        "job_id": job_id,
        "data": {"old_status": old, "new_status": new},
    }


def error_alert(job_id: str, error: str, severity: str) -> dict[str, Any]:
    return {"type": "error_alert", "job_id": job_id, "data": {"error": error, "severity": severity}}


def completion(job_id: str, **data: Any) -> dict[str, Any]:
    return {"type": "completion", "job_id": job_id, "data": data}


def socket_urls(page: Page) -> list[dict[str, list[str]]]:
    """The query of every WebSocket the page opens, in order."""
    opened: list[dict[str, list[str]]] = []
    page.on("websocket", lambda ws: opened.append(parse_qs(urlsplit(ws.url).query)))
    return opened


async def test_page_shows_progress_and_resumes_after_a_drop(
    browser: Browser, start_gateway: StartGateway, gateway_settings: Settings, bus: EventBus
) -> None:
    """Enter job + token, watch the bar move; events sent while the gateway is down arrive after it returns."""
    gateway = await start_gateway(gateway_settings)
    page = await browser.new_page()
    await page.goto(f"{gateway.http}/")
    await expect(page.locator("#empty")).to_be_visible()
    await page.fill("#job-id", "page-job")
    await page.fill("#token", token(jobs=("page-job",)))
    await page.click("#connect")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")

    await bus.emit(live_progress("page-job", 10.0))
    await expect(page.locator("#bar")).to_have_attribute("style", "width: 10%;")
    await expect(page.locator("#empty")).to_be_hidden()
    await bus.emit(live_progress("page-job", 60.0))
    await expect(page.locator("#percent")).to_have_text("60")

    gateway.stop.set()  # a real drop: the server goes away
    await gateway.task
    await expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    missed = await bus.emit(live_progress("page-job", 80.0))
    await bus.emit(completion("page-job", biography_id=7))

    await start_gateway(gateway_settings, port=gateway.port)
    await expect(page.locator("#percent")).to_have_text("100", timeout=15_000)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    items = page.locator("#feed li")
    await expect(items).to_have_count(4)
    ids = await items.evaluate_all("els => els.map(e => e.dataset.id)")
    assert missed in ids and len(set(ids)) == 4
    await expect(items.first).to_have_attribute("data-type", "completion")


async def test_a_link_with_job_and_token_backfills_history_and_a_reload_resumes(
    browser: Browser, start_gateway: StartGateway, gateway_settings: Settings, bus: EventBus
) -> None:
    """``/?job_id=..&token=..`` connects at once from 0-0 (history first); a reload resumes from the last id seen."""
    gateway = await start_gateway(gateway_settings)
    await bus.emit(status_change("link-job", "queued", "running"))
    # Another job's event is not this job's history.
    await bus.emit(live_progress("other-job", 99.0))
    await bus.emit(live_progress("link-job", 20.0))
    last = await bus.emit(live_progress("link-job", 40.0))

    page = await browser.new_page()
    opened = socket_urls(page)
    await page.goto(f"{gateway.http}/?job_id=link-job&token={token(jobs=('link-job',))}")
    await expect(page.locator("#job-id")).to_have_value("link-job")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    items = page.locator("#feed li")
    await expect(items).to_have_count(3)
    await expect(page.locator("#percent")).to_have_text("40")
    assert opened[0]["last_event_id"] == ["0-0"]
    assert "token" not in parse_qs(urlsplit(page.url).query)  # not left in the address bar

    await page.reload()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    await expect(items).to_have_count(3)  # redrawn from this tab's memory, not duplicated
    assert opened[-1]["last_event_id"] == [last]
    newest = await bus.emit(live_progress("link-job", 70.0))
    await expect(items).to_have_count(4)
    await expect(items.first).to_have_attribute("data-id", newest)
    ids = await items.evaluate_all("els => els.map(e => e.dataset.id)")
    assert len(set(ids)) == 4


async def test_trimmed_history_on_a_first_visit_is_a_quiet_note_then_live(
    browser: Browser,
    start_gateway: StartGateway,
    gateway_settings: Settings,
    bus: EventBus,
    redis: Redis,
) -> None:
    """When the job's history is gone (resync_required), the page says so and keeps showing live events."""
    gateway = await start_gateway(gateway_settings)
    for pct in (10.0, 20.0, 30.0):
        await bus.emit(live_progress("trim-job", pct))
    await redis.xtrim(bus.names.events, maxlen=1, approximate=False)

    page = await browser.new_page()
    await page.goto(f"{gateway.http}/?job_id=trim-job&token={token(jobs=('trim-job',))}")
    await expect(page.locator("#history-note")).to_be_visible()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    await expect(page.locator("#problem")).to_be_hidden()  # not an error
    live = await bus.emit(live_progress("trim-job", 50.0))
    await expect(page.locator("#feed li")).to_have_count(1)
    await expect(page.locator("#feed li").first).to_have_attribute("data-id", live)
    await expect(page.locator("#percent")).to_have_text("50")


async def test_finished_state_is_clear_and_the_page_fits_a_narrow_window(
    browser: Browser,
    start_gateway: StartGateway,
    gateway_settings: Settings,
    bus: EventBus,
    tmp_path: Path,
) -> None:
    """A completion shows Finished with the character and biography, apart from the connection status."""
    gateway = await start_gateway(gateway_settings)
    await bus.emit(status_change("done-job", "queued", "running"))
    for step in range(1, 4):
        data = {"progress": step * 100 / 3, "phase": f"Chapter {step} of 3", "message": "Writing"}
        await bus.emit({"type": "progress_update", "job_id": "done-job", "data": data})
    await bus.emit(error_alert("done-job", "Image service slow; retrying", "warning"))
    await bus.emit(completion("done-job", biography_id=456, character_name="Ada Lovelace"))

    page = await browser.new_page(viewport={"width": 900, "height": 900})
    await page.goto(f"{gateway.http}/?job_id=done-job&token={token(jobs=('done-job',))}")
    job = page.locator("#job")
    await expect(job).to_have_attribute("data-state", "finished")
    await expect(page.locator("#outcome")).to_contain_text("Ada Lovelace")
    await expect(page.locator("#outcome")).to_contain_text("456")
    await expect(page.locator("#bar")).to_have_attribute("style", "width: 100%;")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    await expect(page.locator("#feed li")).to_have_count(6)
    await page.screenshot(path=tmp_path / "finished.png", full_page=True, animations="disabled")

    await expect(page).to_have_title(re.compile("Finished"))  # visible from a background tab
    await page.set_viewport_size({"width": 360, "height": 800})
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    await page.screenshot(
        path=tmp_path / "finished-narrow.png", full_page=True, animations="disabled"
    )
    await page.emulate_media(color_scheme="dark")
    await page.screenshot(path=tmp_path / "dark.png", full_page=True, animations="disabled")


async def test_failure_and_cancellation_are_shown_and_a_new_job_can_be_watched_by_keyboard(
    browser: Browser,
    start_gateway: StartGateway,
    gateway_settings: Settings,
    bus: EventBus,
    tmp_path: Path,
) -> None:
    """A critical error means Failed (with the error); a status change to cancelled means Cancelled."""
    gateway = await start_gateway(gateway_settings)
    page = await browser.new_page()
    await page.goto(f"{gateway.http}/?job_id=bad-job&token={token(jobs=('bad-job',))}")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    await bus.emit(live_progress("bad-job", 60.0))
    await bus.emit(error_alert("bad-job", "Simulated generation failure", "critical"))
    await expect(page.locator("#job")).to_have_attribute("data-state", "failed")
    await expect(page.locator("#outcome")).to_contain_text("Simulated generation failure")
    await page.screenshot(path=tmp_path / "failed.png", full_page=True, animations="disabled")

    # Keyboard only: focus the job field, type, tab to the token, Enter submits.
    await page.focus("#job-id")
    await page.keyboard.press("Control+A")
    await page.keyboard.type("stop-job")
    await page.keyboard.press("Tab")
    await expect(page.locator("#token")).to_be_focused()
    await page.keyboard.press("Control+A")
    await page.keyboard.type(token(jobs=("stop-job",)))
    await page.keyboard.press("Enter")
    await expect(page.locator("#job-name")).to_have_text("stop-job")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    await expect(page.locator("#job")).to_have_attribute("data-state", "waiting")
    await expect(page.locator("#feed li")).to_have_count(0)  # the other job's list is gone
    await bus.emit(status_change("stop-job", "running", "cancelled"))
    await expect(page.locator("#job")).to_have_attribute("data-state", "cancelled")


async def test_a_refused_connection_says_why_and_how_to_get_a_token(
    browser: Browser, start_gateway: StartGateway, gateway_settings: Settings, tmp_path: Path
) -> None:
    """Without a token the page shows the server's reason, the token command, and focuses the token field."""
    gateway = await start_gateway(gateway_settings)
    page = await browser.new_page()
    await page.goto(f"{gateway.http}/?job_id=secret-job")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "refused")
    await expect(page.locator("#problem-reason")).to_contain_text("missing token")
    await expect(page.locator("#problem-hint code")).to_have_text(
        "bookgen-events token --job-id secret-job"
    )
    await expect(page.locator("#token")).to_be_focused()
    await expect(page.locator("#job")).to_have_attribute(
        "data-state", "waiting"
    )  # the job's state is not the connection's
    await page.screenshot(path=tmp_path / "refused.png", full_page=True, animations="disabled")


async def test_notifications_are_readable_and_never_run_as_html(
    browser: Browser, start_gateway: StartGateway, gateway_settings: Settings, bus: EventBus
) -> None:
    """Each kind gets a human label and its own rendering; untrusted text stays text."""
    gateway = await start_gateway(gateway_settings)
    await bus.emit(status_change("view-job", "queued", "running"))
    await bus.emit(live_progress("view-job", 25.0))
    await bus.emit(error_alert("view-job", '<img src=x onerror="window.pwned=1">', "warning"))
    page = await browser.new_page()
    await page.goto(f"{gateway.http}/?job_id=view-job&token={token(jobs=('view-job',))}")
    items = page.locator("#feed li")
    await expect(items).to_have_count(3)

    change = page.locator('#feed li[data-type="status_change"]')
    await expect(change).to_contain_text("queued → running")
    await expect(change.locator(".kind")).not_to_have_text("status_change")
    await expect(page.locator('#feed li[data-type="progress_update"]')).to_contain_text("25%")
    error = page.locator('#feed li[data-type="error_alert"]')
    await expect(error.locator(".sev")).to_have_attribute("data-severity", "warning")
    await expect(error).to_contain_text('<img src=x onerror="window.pwned=1">')
    assert await page.locator("#feed img").count() == 0
    assert await page.evaluate("window.pwned") is None
    await expect(page.locator("#job")).to_have_attribute("data-state", "running")  # a warning

    time = change.locator("time")
    await expect(time).to_have_text(re.compile(r"^\d{2}:\d{2}:\d{2}$"))  # a readable local time
    title = await time.get_attribute("title")
    assert title and any(str(y) in title for y in range(2024, 2100))  # the full date on hover
