"""A local Valkey Cluster for tests: the embedded ``valkey-server`` in cluster mode.

:class:`LocalCluster` starts ``masters`` nodes (and ``replicas`` per master) on loopback
ports, each with its cluster bus on a port of its own, joins them with the bundled
``valkey-cli --cluster create`` (the even slot split a real deployment gets) and waits until
every node reports ``cluster_state:ok``. ``kill()`` stops one node the hard way (a master
dying); ``wait_promoted()`` waits until its replica took its slots over. Nothing is kept on
disk beyond the test's temporary folder, and ``stop()`` ends every node it started.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bookgen_events.embedded import server_binary
from tests.support.ports import free_port

NODE_TIMEOUT_MS = 1000  # how long a master may be silent before its replica takes over


def _cli_binary() -> Path:
    return server_binary().with_name("valkey-cli")


@dataclass
class Node:
    port: int
    bus_port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)


@dataclass
class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, on loopback (see module doc)."""

    folder: Path
    masters: int = 3
    replicas: int = 0
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A URL naming one node: clients discover the others."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self, timeout: float = 20.0) -> LocalCluster:
        binary = server_binary()
        for i in range(self.masters * (1 + self.replicas)):
            folder = self.folder / f"node{i}"
            folder.mkdir(parents=True, exist_ok=True)
            node = Node(free_port(), free_port(), folder)
            node.process = subprocess.Popen(
                [
                    str(binary),
                    "--port", str(node.port),
                    "--cluster-port", str(node.bus_port),
                    "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(folder / "nodes.conf"),
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    # A replica may take over however long ago it last heard its master.
                    "--cluster-replica-validity-factor", "0",
                    "--dir", str(folder),
                    "--save", "",
                    "--appendonly", "no",
                    "--logfile", str(folder / "valkey.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            self.nodes.append(node)
        try:
            for node in self.nodes:
                self._wait(lambda n=node: n.client().ping(), timeout, f"node {node.address}")
            subprocess.run(
                [
                    str(_cli_binary()),
                    "--cluster", "create",
                    *[n.address for n in self.nodes],
                    "--cluster-replicas", str(self.replicas),
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=timeout,
            )  # fmt: skip
            self.wait_ok(timeout)
            self._wait(self._replicas_synced, timeout, "every replica in sync")
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ok(self, timeout: float = 20.0) -> None:
        """Wait until every live node reports ``cluster_state:ok`` and knows every slot's owner."""

        def ok() -> bool:
            for node in self.live():
                info = dict(
                    line.split(":", 1)
                    for line in node.client().execute_command("CLUSTER", "INFO").splitlines()
                    if ":" in line
                )
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
                    return False
            return True

        self._wait(ok, timeout, "cluster_state:ok on every node")

    def _replicas_synced(self) -> bool:
        for node in self.live():
            info = node.client().info("replication")
            if info["role"] == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def primaries(self) -> list[Node]:
        """The live nodes that serve slots now (masters, a promoted replica included)."""
        out = []
        for node in self.live():
            with contextlib.suppress(redis.RedisError):
                if node.client().info("replication")["role"] == "master":
                    out.append(node)
        return out

    def kill(self, node: Node) -> None:
        """Kill ``node`` at once (SIGKILL), as a crashed machine would."""
        assert node.process is not None
        node.process.kill()
        node.process.wait(10)

    def wait_promoted(self, killed: Node, timeout: float = 20.0) -> None:
        """Wait until a replica of ``killed`` took over its slots and the cluster is ok."""
        self._wait(lambda: len(self.primaries()) == self.masters, timeout, "a replica promoted")
        self.wait_ok(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(10)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait(10)

    @staticmethod
    def _wait(check: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if check():  # type: ignore[operator]
                    return
            except (redis.RedisError, OSError) as exc:
                last = exc
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last})")
