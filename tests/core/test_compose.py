"""compose.yaml, checked by parsing (no Docker engine here): real commands, real settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bookgen_events.app.cli import build_parser
from bookgen_events.settings import Settings

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[2] / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = [
    name for name, svc in SERVICES.items() if svc.get("command", [""])[0] == "bookgen-events"
]
INFRA_VARS = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "REDIS_PASSWORD"}


def test_every_channel_runs_as_its_own_service() -> None:
    """The gateway and each consumer are separate services, so each scales on its own."""
    commands = {" ".join(SERVICES[name]["command"][1:3]) for name in APP_SERVICES}
    assert {"gateway --host", "consume webhook", "consume email", "consume logger"} <= commands


@pytest.mark.parametrize("service", APP_SERVICES)
def test_service_commands_are_real_cli_commands(service: str) -> None:
    """Every service command parses with the real CLI parser."""
    command = SERVICES[service]["command"]
    args = build_parser().parse_args(command[1:])
    assert callable(args.handler)


@pytest.mark.parametrize("service", list(SERVICES))
def test_every_variable_is_a_real_setting(service: str) -> None:
    """Every environment variable given to an app service is a Settings field."""
    known = {name.upper() for name in Settings.model_fields}
    variables = set(SERVICES[service].get("environment", {}))
    if service in APP_SERVICES:
        assert variables and variables <= known, variables - known
    else:
        assert variables <= INFRA_VARS


def test_redis_keeps_an_append_only_file_and_reports_health() -> None:
    """Redis runs with AOF on and a health check the app services wait for."""
    redis = SERVICES["redis"]
    assert "--appendonly" in redis["command"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert "healthcheck" in redis
    for name in APP_SERVICES:
        assert SERVICES[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_configuration_comes_from_dotenv() -> None:
    """App services read .env, and point at the compose Redis and PostgreSQL."""
    for name in APP_SERVICES:
        svc = SERVICES[name]
        assert svc["env_file"][0]["path"] == ".env"
        assert svc["environment"]["REDIS_URL"].endswith("@redis:6379/0")
        assert svc["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://")


def test_keys_and_the_redis_password_are_required() -> None:
    """The gateway needs its keys and Redis a password: compose refuses to start without them."""
    gateway = SERVICES["gateway"]["environment"]
    for name in ("WEBSOCKET_JWT_SECRET", "ADMIN_API_KEY", "PRODUCER_API_KEY"):
        assert gateway[name].startswith(f"${{{name}:?"), name
    redis = SERVICES["redis"]
    assert "--requirepass" in redis["command"]
    for name in APP_SERVICES:
        assert ":${REDIS_PASSWORD:?" in SERVICES[name]["environment"]["REDIS_URL"]
