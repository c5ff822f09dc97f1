"""What the private test servers (Dovecot, Cyrus) have in common.

Each runs as its own process group on 127.0.0.1 with a plain port (STARTTLS offered)
and an implicit-TLS port, a CA of its own under ``base_dir/ssl`` and a map of users;
the launchers themselves (configuration, start, stop, mailbox set-up) stay with each
server, which differ in all of that.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


class LocalServer:
    """Base of :class:`~yippiemove.testing.dovecot.DovecotServer` and
    :class:`~tests.doubles.cyrus.CyrusServer`: ports, process, CA, users, and the
    context-manager protocol (``with Server(...) as s:`` starts and stops it)."""

    #: What the server is called in errors, and the error class a subclass raises.
    kind: ClassVar[str] = "IMAP"
    error: ClassVar[type[Exception]] = RuntimeError

    host = "127.0.0.1"
    base_dir: Path
    _proc: subprocess.Popen[bytes] | None
    _port: int | None
    _tls_port: int | None
    _users: dict[str, str]

    def start(self) -> Self:  # pragma: no cover - every server has its own
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - every server has its own
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def port(self) -> int:
        """Plain IMAP port (offers STARTTLS)."""
        return self._need(self._port)

    @property
    def tls_port(self) -> int:
        """Implicit-TLS (imaps) port."""
        return self._need(self._tls_port)

    @property
    def pid(self) -> int:
        """PID of the server's master process, which leads its process group."""
        if self._proc is None:
            raise self.error(f"{self.kind} server is not running")
        return self._proc.pid

    @property
    def ca_file(self) -> Path:
        """CA certificate (PEM) that signed the server's certificate."""
        return self.base_dir / "ssl" / "ca.pem"

    @property
    def users(self) -> dict[str, str]:
        """A copy of the user -> password map."""
        return dict(self._users)

    def _need(self, value: int | None) -> int:
        if value is None:
            raise self.error(f"{self.kind} server has not been started")
        return value

    def _pick_ports(self, *, reuse: bool) -> None:
        """Two free ports, or the same ones again (a restart) while they are free."""
        if reuse and self._port and self._tls_port:
            if _port_free(self.host, self._port) and _port_free(self.host, self._tls_port):
                return
        self._port = _free_port(self.host)
        self._tls_port = _free_port(self.host)
        while self._tls_port == self._port:
            self._tls_port = _free_port(self.host)

    @property
    def log_path(self) -> Path:  # pragma: no cover - every server has its own
        raise NotImplementedError

    def _greets(self) -> bool:
        """Whether the plain port answers with a ``* OK`` greeting now."""
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as s:
                data = b""
                while not data.endswith(b"\n") and len(data) < 4096:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"* OK"):
                    with contextlib.suppress(OSError):
                        s.sendall(b"x LOGOUT\r\n")
                    return True
                return False
        except OSError:
            return False

    def _log_since(self, offset: int) -> str:
        """The server's log from byte ``offset`` on (for error messages)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
