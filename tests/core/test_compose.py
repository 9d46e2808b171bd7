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


CLUSTER = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "compose.cluster.yaml").read_text()
)["services"]
NODES = [name for name in CLUSTER if name.startswith("redis-node-")]


def test_the_cluster_example_moves_every_app_service_onto_the_cluster() -> None:
    """compose.cluster.yaml gives each app service of compose.yaml the cluster's URL,
    REDIS_CLUSTER and STREAM_PARTITIONS (real settings, valid values), after the join."""
    from bookgen_events.settings import load_settings

    assert set(APP_SERVICES) <= set(CLUSTER)
    known = {name.upper() for name in Settings.model_fields}
    for name in APP_SERVICES:
        env = CLUSTER[name]["environment"]
        assert set(env) <= known, set(env) - known
        assert (
            "@redis-node-1:6379/0" in env["REDIS_URL"] and ":${REDIS_PASSWORD:?" in env["REDIS_URL"]
        )
        settings = load_settings(
            redis_cluster=env["REDIS_CLUSTER"],
            stream_partitions=env["STREAM_PARTITIONS"],
            _env_file=None,
        )
        assert settings.redis_cluster is True
        assert settings.stream_partitions % (len(NODES) // 2) == 0  # evenly over the masters
        condition = CLUSTER[name]["depends_on"]["redis-cluster-init"]["condition"]
        assert condition == "service_completed_successfully"


def test_the_cluster_nodes_and_their_join() -> None:
    """Six nodes in cluster mode with AOF and the password (replicas authenticate with it);
    the join names every node and gives each master a replica."""
    assert len(NODES) == 6
    for name in NODES:
        command = CLUSTER[name]["command"]
        assert command[command.index("--cluster-enabled") + 1] == "yes"
        assert command[command.index("--appendonly") + 1] == "yes"
        assert "--requirepass" in command and "--masterauth" in command
        assert "healthcheck" in CLUSTER[name]
    init = CLUSTER["redis-cluster-init"]
    script = init["command"][-1]
    assert "--cluster create" in script and "--cluster-replicas 1" in script
    assert "for n in 1 2 3 4 5 6" in script
    assert set(init["depends_on"]) == set(NODES)
