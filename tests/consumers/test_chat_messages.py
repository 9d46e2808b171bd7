"""The Slack and Discord renderings of each notification type: pure functions of the event."""

from __future__ import annotations

import json

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from bookgen_events.errors import Reject, RetryLater
from bookgen_events.events import Event
from consumers import discord, slack
from consumers.notice import notice, progress_bar
from consumers.outbound import OutboundResponse


def event(kind: str, **data: object) -> Event:
    return Event(type=kind, job_id="42", data=data)


def test_progress_bar() -> None:
    assert progress_bar(0) == "░░░░░░░░░░ 0%"
    assert progress_bar(50) == "█████░░░░░ 50%"
    assert progress_bar(72.5) == "███████░░░ 72.5%"
    assert progress_bar(100) == "██████████ 100%"


@pytest.mark.parametrize(
    ("kind", "data", "headline"),
    [
        ("completion", {"status": "completed"}, "✅ Job 42 completed"),
        ("completion", {"character_name": "Ada", "status": "completed"},
         "✅ Biography of Ada is ready"),
        ("completion", {"status": "cancelled"}, "⚠️ Job 42 finished: cancelled"),
        ("status_change", {"old_status": "queued", "new_status": "started"}, "🔔 Job 42 started"),
        ("status_change", {"old_status": "draft", "new_status": "review"},
         "🔄 Job 42 status: draft → review"),
        ("progress_update", {"progress": 40, "phase": "writing"}, "⏳ Job 42: 40% done"),
        ("progress_update", {"progress": 10, "metadata": {"character_name": "Ada"}},
         "⏳ Job 42: character detected — Ada"),
        ("error_alert", {"error": "disk full", "severity": "critical"},
         "🚨 Job 42 failed (critical)"),
        ("error_alert", {"error": "slow", "severity": "warning"}, "⚠️ Job 42 failed (warning)"),
        ("admin_alert", {"alert_type": "endpoint_disabled", "message": "ep_1 off"},
         "🛠️ Admin alert: endpoint disabled"),
    ],
)  # fmt: skip
def test_each_type_reads_as_one_line_in_both(kind: str, data: dict, headline: str) -> None:
    """Slack's text and Discord's content are the same readable headline."""
    e = event(kind, **data)
    assert slack.message(e)["text"] == headline
    assert discord.message(e)["content"] == headline


def test_progress_carries_its_bar_and_phase() -> None:
    e = event("progress_update", progress=50, phase="chapter 3", message="halfway")
    section = slack.message(e)["blocks"][1]["text"]["text"]
    assert section == "█████░░░░░ 50%\nPhase: chapter 3\nhalfway"
    assert discord.message(e)["embeds"][0]["description"] == section


def test_discord_colour_follows_severity() -> None:
    colours = {
        severity: discord.message(event("error_alert", error="x", severity=severity))["embeds"][0][
            "color"
        ]
        for severity in ("info", "warning", "error", "critical")
    }
    assert colours == {"info": 0x3498DB, "warning": 0xF1C40F, "error": 0xE74C3C,
                       "critical": 0x992D22}  # fmt: skip
    embed = discord.message(event("error_alert", error="x", severity="error"))["embeds"][0]
    assert {"name": "Severity", "value": "error", "inline": True} in embed["fields"]


def test_slack_escapes_what_the_event_carries() -> None:
    """An event cannot ping <!channel> or forge a link in Slack; nor @everyone in Discord."""
    e = event("error_alert", error="<!channel> see <http://evil|here> & run")
    text = json.dumps(slack.message(e))
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text and "&amp; run" in text
    assert discord.message(e)["allowed_mentions"] == {"parse": []}


def test_long_texts_are_cut_to_the_services_limits() -> None:
    e = event("error_alert", error="x" * 10_000)
    assert len(slack.message(e)["blocks"][1]["text"]["text"]) == 3000
    assert len(discord.message(e)["embeds"][0]["description"]) == 4096


def test_bodies_are_json_bytes_with_the_event_time() -> None:
    e = event("completion", status="completed")
    assert json.loads(discord.encode(e))["embeds"][0]["timestamp"] == e.timestamp
    assert e.id in json.loads(slack.encode(e))["blocks"][-1]["elements"][0]["text"]
    assert notice(e).fields == [("Job", "42")]


def _answer(status: int, body: bytes, **headers: str) -> OutboundResponse:
    return OutboundResponse(status, CIMultiDictProxy(CIMultiDict(headers)), body)


def test_discord_refine_takes_the_longer_wait() -> None:
    body = b'{"message": "You are being rate limited.", "retry_after": 0.3, "global": false}'
    later = discord.refine(_answer(429, body), RetryLater("HTTP 429", status_code=429))
    assert isinstance(later, RetryLater) and later.delay == 0.3
    header_wins = discord.refine(_answer(429, body), RetryLater("HTTP 429", delay=2.0))
    assert isinstance(header_wins, RetryLater) and header_wins.delay == 2.0
    final = Reject("HTTP 404")
    assert discord.refine(_answer(404, b"{}"), final) is final
    assert discord.retry_after_body(b"not json") is None
    assert discord.retry_after_body(b'{"retry_after": true}') is None


def test_slack_refine_names_slacks_reason() -> None:
    reject = slack.refine(_answer(410, b"channel_is_archived"), Reject("HTTP 410 Gone"))
    assert reject.reason == "HTTP 410 Gone: channel_is_archived"
