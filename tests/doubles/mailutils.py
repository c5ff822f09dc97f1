"""Throwaway, real GNU Mailutils ``imap4d`` servers on 127.0.0.1: the third server of issue 13.

:class:`Imap4dServer` runs Debian's ``imap4d`` (package ``mailutils-imap4d``, GNU Mailutils
3.15 on bookworm) as a daemon in the foreground with a configuration file of its own
(``--config-file`` implies ``--no-site-config``: nothing from ``/etc/mailutils.conf``), on
a free plain port (STARTTLS offered) and a free implicit-TLS port, waits for its
``* OK`` greeting and kills its process group on :meth:`Imap4dServer.stop`::

    with Imap4dServer(tmp_path, users={"alice": "secret"}) as server:
        imap = imaplib.IMAP4(server.host, server.port)
        imap.login(server.login("alice"), "secret")   # "alice@yippiemove.test"

Users without touching the machine's ``/etc/passwd``: Mailutils' ``virtdomain``
authorization reads passwd-format files ``<passwd-dir>/<domain>``, one per domain, and
the ``generic`` authentication compares ``crypt(password, field)`` with the password
field there (a SHA-512 crypt made by ``openssl passwd -6``, password on stdin).  So the
login names are ``user@``:data:`DOMAIN`; a name without ``@`` is refused.  The uid/gid
in the file are the test process's own, so imap4d (root or not) runs each session as the
user who runs the tests.

Store: each user's home is ``base_dir/home/<user>``; the personal namespace is ``""``
with separator ``"/"`` and every folder is a **maildir** (INBOX is ``home/<user>/INBOX``,
made here).  Mailutils' mbox was rejected: it shows its own ``X-IMAPbase``/``X-UID``/
``Status`` header lines inside ``BODY[]`` (and rewrites the first message's
``X-IMAPbase`` whenever a message is added), drops the INTERNALDATE's zone (keeps the
clock, i.e. another instant) and gives a new UIDVALIDITY when it rewrites the file.

What imap4d 3.15 does with maildir, as found by the tests (docs/testing.md, "GNU
Mailutils imap4d"):

- CAPABILITY: ``IMAP4rev1 NAMESPACE ID IDLE LITERAL+ UNSELECT`` (+ ``STARTTLS`` and the
  ``AUTH=`` mechanisms of GNU SASL): no UIDPLUS, MULTIAPPEND, SPECIAL-USE, CONDSTORE,
  ENABLE, MOVE, UTF8=ACCEPT.
- PERMANENTFLAGS ``(\\Answered \\Flagged \\Deleted \\Seen \\Draft)``: no keywords at all;
  a keyword in APPEND or STORE is ``BAD ... Unrecognized flag``.
- APPEND ignores the flags and the date-time given: the message is stored without
  flags, and its INTERNALDATE is taken from its first ``Received:`` header, else its
  ``Date:`` header, else the time of delivery.  Flags can be set with STORE afterwards;
  the INTERNALDATE cannot be set at all.
- Message bytes: stored with LF line ends and served with CRLF, so a bare LF comes back
  as CRLF; a message is cut at its first NUL byte.
- INBOX is listed ``\\NoInferiors``; APPEND to a folder that does not exist is
  ``NO [TRYCREATE]``.
"""

from __future__ import annotations

import atexit
import contextlib
import imaplib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests import mailcheck
from tests.doubles.cyrus import _quoted, _Session
from yippiemove.testing._server import LocalServer, _port_free
from yippiemove.testing.dovecot import _group_members, _iter_flags, _tail, _tls_material

__all__ = [
    "DOMAIN",
    "INSTALL_HINT",
    "Imap4dError",
    "Imap4dMessage",
    "Imap4dNotInstalledError",
    "Imap4dServer",
    "imap4d_available",
    "imap4d_binary",
]

INSTALL_HINT = "run scripts/test, which installs Debian package mailutils-imap4d"
_IMAP4D = ("/usr/sbin/imap4d", "/usr/bin/imap4d")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
TERM_GRACE = 0.5
#: Domain of the virtual users: log in as ``user@DOMAIN``.
DOMAIN = "yippiemove.test"
_USER_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")


class Imap4dError(RuntimeError):
    """imap4d could not be started, or stopped, or used as asked."""


class Imap4dNotInstalledError(Imap4dError):
    """The imap4d binary (or openssl) is missing."""


@dataclass(frozen=True)
class Imap4dMessage:
    """One message for :meth:`Imap4dServer.deliver_many`: bytes and system flags.

    There is no INTERNALDATE: imap4d takes it from the message's ``Received:`` or
    ``Date:`` header, whatever APPEND says.
    """

    raw: bytes
    flags: tuple[str, ...] = ()


def imap4d_binary() -> Path:
    """Path of imap4d; raises :class:`Imap4dNotInstalledError` when missing."""
    env = os.environ.get("YIPPIEMOVE_IMAP4D")
    for candidate in (env,) if env else _IMAP4D:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise Imap4dNotInstalledError(f"GNU Mailutils imap4d not found: {INSTALL_HINT}")


def imap4d_available() -> bool:
    """True if imap4d and openssl (for password hashes) are installed."""
    try:
        imap4d_binary()
    except Imap4dNotInstalledError:
        return False
    return shutil.which("openssl") is not None


def _crypt(password: str) -> str:
    """A SHA-512 crypt(3) string of the password (``openssl passwd``; password on stdin)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise Imap4dNotInstalledError("openssl not found: apt-get install openssl")
    done = subprocess.run(
        [openssl, "passwd", "-6", "-stdin"],
        input=password.encode() + b"\n",
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise Imap4dError(f"openssl passwd failed: {done.stderr.decode(errors='replace')}")
    return done.stdout.decode().strip()


# Running servers, stopped at interpreter exit.
_running: set[Imap4dServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.stop()


class Imap4dServer(LocalServer):
    """A private GNU Mailutils imap4d (see the module docstring)."""

    kind = "imap4d"
    error = Imap4dError

    def __init__(self, base_dir: Path, users: Mapping[str, str] | None = None) -> None:
        self.base_dir = Path(base_dir).resolve()
        self._users = {}
        for name, password in (users or {}).items():
            self._check_user(name, password)
            self._users[name] = password
        self._proc = None
        self._port = None
        self._tls_port = None
        self._lock = threading.RLock()
        #: Personal namespace prefix and separator (as NAMESPACE says).
        self.prefix = ""
        self.separator = "/"

    # ----------------------------------------------------------------- properties

    @property
    def log_path(self) -> Path:
        """imap4d's stdout and stderr (it logs there with ``logging { syslog no; }``)."""
        return self.base_dir / "imap4d.log"

    @property
    def config_path(self) -> Path:
        return self.base_dir / "imap4d.conf"

    @staticmethod
    def login(user: str) -> str:
        """The login name of a user: ``user@`` :data:`DOMAIN`."""
        return f"{user}@{DOMAIN}"

    def home(self, user: str) -> Path:
        """The user's directory (a maildir per folder, ``INBOX`` among them)."""
        return self.base_dir / "home" / user

    @property
    def logins(self) -> dict[str, str]:
        """Login name (``user@domain``) -> password."""
        return {self.login(u): p for u, p in self._users.items()}

    def __repr__(self) -> str:
        state = f"port={self._port} tls_port={self._tls_port}" if self.running else "stopped"
        return f"<Imap4dServer {self.base_dir} {state}>"

    # ----------------------------------------------------------------- lifecycle

    def start(self, timeout: float = START_TIMEOUT) -> Imap4dServer:
        """Write the configuration and users, start imap4d, wait for its greeting."""
        binary = imap4d_binary()
        with self._lock:
            if self._proc is not None:
                raise Imap4dError("imap4d is already running")
            self.base_dir.mkdir(parents=True, exist_ok=True)
            try:
                self._write_tls()
                self._write_users()
                fixed = self._port is not None
                for attempt in range(5):
                    self._pick_ports(reuse=fixed and attempt == 0)
                    self._write_config()
                    if self._launch(binary, timeout):
                        break
                else:
                    raise Imap4dError("could not find free ports for imap4d")
                _running.add(self)
            except BaseException:
                _running.discard(self)
                self._kill_group(STOP_TIMEOUT)
                self._proc = None
                raise
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop imap4d (SIGTERM to its process group, then SIGKILL); the mail stays."""
        with self._lock:
            try:
                self._kill_group(timeout)
            finally:
                self._proc = None
                _running.discard(self)

    def _launch(self, binary: Path, timeout: float) -> bool:
        """Start the daemon; False if a port was taken meanwhile."""
        with open(self.log_path, "ab") as log:
            log_start = log.tell()
            self._proc = subprocess.Popen(
                [str(binary), f"--config-file={self.config_path}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # own process group: stop() kills the sessions too
                close_fds=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                if not (_port_free(self.host, self.port) and _port_free(self.host, self.tls_port)):
                    return False
                raise Imap4dError(
                    f"imap4d exited with status {code} during start-up; {self.log_path}:\n"
                    f"{_tail(self._log_since(log_start))}"
                )
            if self._greets():
                return True
            if time.monotonic() > deadline:
                self._kill_group(STOP_TIMEOUT)
                self._proc = None
                raise Imap4dError(
                    f"imap4d did not answer on {self.host}:{self._port} within {timeout:.0f} s;"
                    f" log {self.log_path}:\n{_tail(self._log_since(log_start))}"
                )
            time.sleep(0.005)

    def _kill_group(self, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        pgid = proc.pid
        if proc.poll() is None or _group_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + min(TERM_GRACE, timeout)
        while time.monotonic() < deadline and (proc.poll() is None or _group_members(pgid)):
            time.sleep(0.002)
        if proc.poll() is None or _group_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while (proc.poll() is None or _group_members(pgid)) and time.monotonic() < deadline:
            time.sleep(0.002)
        if proc.poll() is None or _group_members(pgid):
            raise Imap4dError(f"imap4d processes {_group_members(pgid)} survived SIGKILL")

    # ----------------------------------------------------------------- files

    def _write_tls(self) -> None:
        ssl_dir = self.base_dir / "ssl"
        ssl_dir.mkdir(exist_ok=True)
        for name, data in _tls_material().items():
            path = ssl_dir / name
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
            os.chmod(path, 0o600 if name.endswith(".key") else 0o644)

    def _write_users(self) -> None:
        """The domain's passwd file, and each user's home with an INBOX maildir."""
        domains = self.base_dir / "domains"
        domains.mkdir(exist_ok=True)
        uid, gid = os.getuid(), os.getgid()
        lines = []
        for name, password in self._users.items():
            home = self.home(name)
            for sub in ("cur", "new", "tmp"):
                (home / "INBOX" / sub).mkdir(parents=True, exist_ok=True)
            lines.append(f"{name}:{_crypt(password)}:{uid}:{gid}:{name}:{home}:/bin/false\n")
        path = domains / DOMAIN
        path.write_text("".join(lines))
        os.chmod(path, 0o600)

    def _write_config(self) -> None:
        ssl = self.base_dir / "ssl"
        tls = (
            "  tls {\n"
            f'    ssl-certificate-file "{ssl / "server.pem"}";\n'
            f'    ssl-key-file "{ssl / "server.key"}";\n'
            "  };\n"
        )
        text = (
            "# Generated by tests.doubles.mailutils; rewritten on every start.\n"
            "auth {\n"
            "  authorization virtdomain;\n"
            "  authentication generic;\n"
            "};\n"
            f'virtdomain {{ passwd-dir "{self.base_dir / "domains"}"; }};\n'
            "logging { syslog no; };\n"
            "tcp-wrappers { enable no; };\n"
            "mode daemon;\n"
            "foreground yes;\n"
            f'pidfile "{self.base_dir / "imap4d.pid"}";\n'
            "namespace personal {\n"
            '  prefix "" {\n'
            '    directory "$home";\n'
            '    delimiter "/";\n'
            "    mailbox-type maildir;\n"
            "  };\n"
            "};\n"
            f"server {self.host}:{self.port} {{\n"
            "  tls-mode stls;\n"
            f"{tls}"
            "};\n"
            f"server {self.host}:{self.tls_port} {{\n"
            "  tls-mode connection;\n"
            f"{tls}"
            "};\n"
        )
        self.config_path.write_text(text)

    # ----------------------------------------------------------------- users

    @staticmethod
    def _check_user(name: str, password: str) -> None:
        if not _USER_RE.fullmatch(name):
            raise ValueError(f"bad user name {name!r} (lower-case letters, digits, _ and -)")
        if not isinstance(password, str):
            raise TypeError("password must be a str")
        if not password or any(c in password for c in "\r\n\0:"):
            raise ValueError("password must be non-empty, without CR, LF, NUL or ':'")

    def add_user(self, name: str, password: str) -> None:
        """Add a user or change a password (read by imap4d at each login)."""
        self._check_user(name, password)
        with self._lock:
            self._users[name] = password
            if self.base_dir.exists():
                self._write_users()

    def _session(self, user: str, password: str | None = None) -> _Session:
        if password is None:
            if user not in self._users:
                raise ValueError(f"unknown user {user!r}: add_user() first")
            password = self._users[user]
        if not self.running:
            raise Imap4dError("imap4d is not running")
        try:
            return _Session(self.host, self.port, self.login(user), password, timeout=60)
        except RuntimeError as exc:  # the Cyrus helper's error, same protocol
            raise Imap4dError(str(exc).replace("Cyrus", "imap4d")) from exc

    @contextlib.contextmanager
    def session(self, user: str) -> Iterator[_Session]:
        """A logged-in minimal client (``.command(b"...")``) for setting things up."""
        s = self._session(user)
        try:
            yield s
        finally:
            s.close()

    def check_login(self, user: str, password: str) -> bool:
        try:
            self._session(user, password).close()
        except Imap4dError:
            return False
        return True

    # ----------------------------------------------------------------- snapshots

    def snapshot(
        self, user: str
    ) -> dict[str, tuple[int | None, dict[int, tuple[frozenset[str], str]]]]:
        """The account as folder -> (UIDVALIDITY, or None for a \\NoSelect name,
        UID -> (flags without \\Recent, sha256 of the bytes)), read over IMAP with EXAMINE
        and BODY.PEEK (changes nothing): the shape of the source-untouched guard's
        snapshots (the interface of tests/source_guard.py on branch fin12)."""
        c = imaplib.IMAP4(self.host, self.port)
        try:
            c.login(self.login(user), self._users[user])
            out: dict[str, tuple[int | None, dict[int, tuple[frozenset[str], str]]]] = {}
            for name, (_sep, attrs) in mailcheck.folders(c).items():
                if "\\noselect" in {a.lower() for a in attrs}:
                    out[name] = (None, {})
                    continue
                typ, data = c.status(mailcheck._quote(name), "(UIDVALIDITY)")
                if typ != "OK" or not data[0]:
                    raise Imap4dError(f"STATUS {name!r}: {data!r}")
                m = re.search(rb"UIDVALIDITY (\d+)", data[0])
                if m is None:
                    raise Imap4dError(f"STATUS {name!r} without UIDVALIDITY: {data!r}")
                msgs = {
                    uid: (frozenset(msg.flags), msg.sha)
                    for uid, msg, _ in mailcheck.messages(c, name)
                }
                # imap4d picks a new UIDVALIDITY for an empty folder at each reading (it
                # stores none until the folder holds a message): not compared while empty.
                out[name] = (int(m.group(1)) if msgs else None, msgs)
            return out
        finally:
            with contextlib.suppress(Exception):
                c.logout()

    # ----------------------------------------------------------------- mail

    def create_folder(self, user: str, folder: str, *, subscribe: bool = True) -> None:
        """Create a folder (full name with "/", Unicode) if it is missing."""
        with self.session(user) as s:
            self._create(s, folder, subscribe=subscribe)

    @staticmethod
    def _create(s: _Session, folder: str, *, subscribe: bool) -> None:
        ok, text, _ = s.command(b"CREATE " + _quoted(folder))
        if not ok and "already exist" not in text.lower():
            raise Imap4dError(f"CREATE {folder!r} failed: {text}")
        if subscribe:
            ok, text, _ = s.command(b"SUBSCRIBE " + _quoted(folder))
            if not ok:
                raise Imap4dError(f"SUBSCRIBE {folder!r} failed: {text}")

    def deliver(self, user: str, folder: str, raw: bytes, flags: Iterable[str] = ()) -> int:
        """APPEND one message and set its flags; returns its UID (see deliver_many)."""
        if isinstance(flags, str):
            raise TypeError("flags must be an iterable of str, not a str")
        return self.deliver_many(user, folder, [Imap4dMessage(raw, tuple(flags))])[0]

    def deliver_many(
        self, user: str, folder: str, items: Iterable[Imap4dMessage | bytes]
    ) -> list[int]:
        """APPEND messages to ``folder`` (created if missing) in order, then set their
        system flags with STORE (imap4d ignores APPEND's flags); returns their UIDs.

        Keywords raise ValueError: imap4d has none.  The bytes are sent as given; imap4d
        changes some (module docstring).
        """
        messages = [m if isinstance(m, Imap4dMessage) else Imap4dMessage(m) for m in items]
        for msg in messages:
            if not isinstance(msg.raw, bytes | bytearray | memoryview):
                raise TypeError("raw message must be bytes")
            for flag in _iter_flags(msg.flags):
                if not flag.startswith("\\"):
                    raise ValueError(f"imap4d stores no keywords: {flag!r}")
        with self.session(user) as s:
            if folder.upper() != "INBOX":
                self._create(s, folder, subscribe=True)
            name = _quoted(folder)
            for msg in messages:
                literal = b"{%d+}\r\n" % len(msg.raw) + bytes(msg.raw)
                ok, text, _ = s.command(b"APPEND " + name + b" " + literal)
                if not ok:
                    raise Imap4dError(f"APPEND to {folder!r} refused: {text}")
            if not messages:
                return []
            ok, text, _ = s.command(b"SELECT " + name)
            if not ok:
                raise Imap4dError(f"SELECT {folder!r} failed: {text}")
            uids = self._last_uids(s, len(messages))
            for uid, msg in zip(uids, messages, strict=True):
                if msg.flags:
                    flags = " ".join(msg.flags).encode()
                    ok, text, _ = s.command(b"UID STORE %d FLAGS.SILENT (" % uid + flags + b")")
                    if not ok:
                        raise Imap4dError(f"STORE {msg.flags} failed: {text}")
            return uids

    @staticmethod
    def _last_uids(s: _Session, count: int) -> list[int]:
        """UIDs of the last ``count`` messages of the selected folder (no UIDPLUS here)."""
        s._tag += 1
        tag = b"y%d" % s._tag
        s._sock.sendall(tag + b" UID SEARCH ALL\r\n")
        found: list[int] = []
        while True:
            line = s._line()
            if line.upper().startswith(b"* SEARCH"):
                found = [int(x) for x in line[8:].split()]
            elif line.startswith(tag + b" "):
                break
        if len(found) < count:
            raise Imap4dError(f"expected {count} new messages, folder has {len(found)}")
        return sorted(found)[-count:]
