"""``bookgen-events endpoints ...`` and ``subscribers ...`` as real subprocesses."""

from __future__ import annotations

import json

from tests.support.processes import cli

URL = "https://hooks.example.com/in"


def test_endpoints_through_their_life(cli_env: dict[str, str]) -> None:
    """add shows the secret once; list/show never; update, disable, rotate, rm; errors are one line."""
    added = cli(cli_env, "endpoints", "add", URL, "--event-type", "job.completed",
                "--header", "X-Team=books", "--job-id", "7")  # fmt: skip
    assert added.returncode == 0, added.stderr
    endpoint = json.loads(added.stdout)
    assert endpoint["secret"].startswith("whsec_") and endpoint["headers"] == {"X-Team": "books"}
    listed = json.loads(cli(cli_env, "endpoints", "list").stdout)
    assert [e["id"] for e in listed] == [endpoint["id"]] and "secret" not in listed[0]
    shown = json.loads(cli(cli_env, "endpoints", "show", endpoint["id"]).stdout)
    assert "secret" not in shown and shown["job_ids"] == ["7"]

    updated = json.loads(cli(cli_env, "endpoints", "update", endpoint["id"],
                             "--description", "billing").stdout)  # fmt: skip
    assert updated["description"] == "billing"
    disabled = json.loads(cli(cli_env, "endpoints", "disable", endpoint["id"],
                              "--reason", "maintenance").stdout)  # fmt: skip
    assert (disabled["disabled"], disabled["disabled_reason"]) == (True, "maintenance")
    assert (
        json.loads(cli(cli_env, "endpoints", "enable", endpoint["id"]).stdout)["disabled"] is False
    )
    rotated = json.loads(cli(cli_env, "endpoints", "rotate-secret", endpoint["id"]).stdout)
    assert rotated["secret"] != endpoint["secret"]
    assert cli(cli_env, "endpoints", "rm", endpoint["id"]).returncode == 0

    for args in (("show", endpoint["id"]), ("add", "http://127.1/"), ("add", "ftp://x.example/")):
        failed = cli(cli_env, "endpoints", *args)
        assert failed.returncode != 0 and len(failed.stderr.strip().splitlines()) == 1, (
            failed.stderr
        )
        assert "Traceback" not in failed.stderr


def test_subscribers_set_show_rm(cli_env: dict[str, str]) -> None:
    profile = '{"preferences": {"sms": {"enabled": false}}}'
    stored = cli(cli_env, "subscribers", "set", "u1", "--email", "ada@example.com",
                 "--phone", "+33612345678", "--json", profile)  # fmt: skip
    assert stored.returncode == 0, stored.stderr
    shown = json.loads(cli(cli_env, "subscribers", "show", "u1").stdout)
    assert (shown["email"], shown["preferences"]["sms"]["enabled"]) == ("ada@example.com", False)
    bad = cli(cli_env, "subscribers", "set", "u1", "--phone", "0612")
    assert bad.returncode != 0 and "E.164" in bad.stderr and "Traceback" not in bad.stderr
    assert cli(cli_env, "subscribers", "rm", "u1").returncode == 0
    gone = cli(cli_env, "subscribers", "show", "u1")
    assert gone.returncode != 0 and "no subscriber" in gone.stderr
