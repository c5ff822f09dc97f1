"""Throwaway, real Cyrus IMAP servers on 127.0.0.1 for tests: the second server of issue 5.

:class:`CyrusServer` runs Debian's Cyrus IMAP 3.x (``master`` from ``cyrus-common`` and
an ``imapd``) with a configuration of its own (nothing from ``/etc/imapd.conf`` or
``/etc/cyrus.conf`` is read), waits until the IMAP port greets with ``* OK`` and kills the
whole process group on :meth:`CyrusServer.stop`::

    with CyrusServer(tmp_path, users={"alice": "secret"}) as server:
        imap = imaplib.IMAP4(server.host, server.port)

What clients see is Cyrus's classic namespace, as the issue asks: ``altnamespace: no``
and ``unixhierarchysep: no`` make the personal namespace ``"INBOX."`` with separator
``"."`` (folders are ``INBOX.Sent Items``, ``INBOX.Archive.2019``; other users' folders
would be under ``user.``).  A user's INBOX and special folders are created by the server
on the first login (``autocreate_quota: 0``, i.e. no quota, ``autocreate_inbox_folders``
and ``xlist-*``), subscribed, with RFC 6154 SPECIAL-USE attributes.  Their names are
:data:`DEFAULT_SPECIAL_FOLDERS` unless given (on purpose not the same as Dovecot's Sent,
Drafts, Trash, Junk).  Cyrus lists those attributes in lower case (``\\sent``); IMAP
attributes are case-insensitive.

Installing: Debian's ``cyrus-imapd`` package conflicts with ``dovecot-imapd`` (both
provide ``imap-server``, so installing one removes the other).  ``scripts/test``
therefore installs ``cyrus-common`` (master, tools, libraries) and ``sasl2-bin``
(saslpasswd2), and unpacks ``imapd`` from the ``cyrus-imapd`` package of the same version
into ``/usr/local/lib/yippiemove/cyrus/``.  A real ``/usr/lib/cyrus/bin/imapd`` is used
when installed; ``YIPPIEMOVE_CYRUS_IMAPD`` names another.

Layout: everything Cyrus touches lives in a private directory under ``/tmp`` while the
server runs (unix socket paths must stay short, and as root the services run as the
Debian package's ``cyrus`` user, which cannot enter a private ``base_dir`` such as
pytest's ``tmp_path``); ``base_dir/data`` is a symlink to it meanwhile and is moved back
by :meth:`CyrusServer.stop`, so a restart keeps the mail.  ``base_dir`` holds::

    imapd.conf, cyrus.conf  copies of the generated configuration (for reading)
    cyrus.log               the master's stdout/stderr (Cyrus logs to syslog, so this
                            holds little; without a syslog daemon the rest is lost)
    ssl/                    ca.pem (give it to clients), server.pem, server.key
    data/                   config/ (Cyrus's databases), spool/ (the mail), sasldb2

Passwords are in a private sasldb (``sasl_pwcheck_method: auxprop``, ``sasldb``, written
with ``saslpasswd2``); plain LOGIN works without TLS (``allowplaintext: yes``), and the
plain port offers STARTTLS with the same test CA as :mod:`yippiemove.testing.dovecot`.

What Cyrus 3.6 refuses or changes on APPEND (checked with 3.6.1; Dovecot 2.3 keeps
all of these but the empty message, and serves a NUL as 0x80):

- a bare LF: ``NO Message contains bare newlines``; a NUL byte: ``NO Message contains
  NUL characters``; a message without a header: ``NO Message contains invalid header``;
  an empty message: ``NO Zero-length message literal`` (a bare CR is kept);
- 8-bit bytes in the header: by default (``munge8bit: 1``) each is silently replaced by
  ``X`` (same size, so only the bytes tell); ``eight_bit_headers="reject"`` sets
  ``reject8bit`` (then ``NO`` with the server's words), ``"keep"`` (our default, so that
  exactness can be tested) stores them unchanged;
- keywords: at most 100 per folder; an APPEND that would add the 101st is refused as a
  whole (``NO Too many user flags in mailbox``);
- folder names with ``%``, ``"``, ``\\``, ``/``, ``{``, ``!`` or control characters:
  ``NO Invalid mailbox name``; a folder outside ``INBOX.``: ``NO Permission denied``.
  Creating ``INBOX.a.b`` makes ``INBOX.a`` too, as a real (selectable) folder.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from yippiemove.testing._server import LocalServer, _port_free
from yippiemove.testing.dovecot import (
    _group_members,
    _iter_flags,
    _mutf7,
    _tail,
    _tls_material,
)

__all__ = [
    "DEFAULT_SPECIAL_FOLDERS",
    "CyrusError",
    "CyrusMessage",
    "CyrusNotInstalledError",
    "CyrusServer",
    "cyrus_available",
    "cyrus_binaries",
]

INSTALL_HINT = (
    "run scripts/test, which installs Debian packages cyrus-common and sasl2-bin and "
    "unpacks imapd of package cyrus-imapd into /usr/local/lib/yippiemove/cyrus"
)
_CYRUS_BIN = Path("/usr/lib/cyrus/bin")
_IMAPD_CANDIDATES = (_CYRUS_BIN / "imapd", Path("/usr/local/lib/yippiemove/cyrus/imapd"))
_SASLPASSWD = ("/usr/sbin/saslpasswd2", "/usr/bin/saslpasswd2")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
TERM_GRACE = 0.5
#: Realm of the sasldb entries; also the server's name (greeting, SASL realm).
SERVERNAME = "localhost"

#: Special-use attribute -> folder name under ``INBOX.`` made for every user.
DEFAULT_SPECIAL_FOLDERS: Mapping[str, str] = {
    "\\Sent": "Sent Items",
    "\\Drafts": "Drafts",
    "\\Trash": "Deleted Items",
    "\\Junk": "Spam",
}
_SPECIAL_USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
_USER_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_LITERAL_END = re.compile(rb"\{(\d+)\}\r\n\Z")
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) ([0-9:,]+)\]", re.IGNORECASE)
_BATCH_BYTES = 8 << 20  # bytes of messages per MULTIAPPEND in deliver_many
_LIST_LINE = re.compile(rb'\* LIST \(([^)]*)\) (?:NIL|"(?:[^"\\]|\\.)*") (.*)\r\n\Z', re.S)
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_FETCH_UID = re.compile(rb"[( ]UID (\d+)")
_FETCH_FLAGS = re.compile(rb"[( ]FLAGS \(([^)]*)\)")
_FETCH_BODY = re.compile(rb"BODY\[\] \{(\d+)\}\r\n")


class CyrusError(RuntimeError):
    """Cyrus could not be started, or stopped, or used as asked."""


class CyrusNotInstalledError(CyrusError):
    """The Cyrus binaries (or saslpasswd2) are missing."""


@dataclass(frozen=True)
class CyrusMessage:
    """One message for :meth:`CyrusServer.deliver_many`.

    ``flags`` holds IMAP system flags (``\\Seen``...) and keywords; a naive
    ``internaldate`` is local time; ``None`` lets the server use now.
    """

    raw: bytes
    flags: tuple[str, ...] = ()
    internaldate: datetime | None = None


@dataclass(frozen=True)
class CyrusBinaries:
    master: Path
    imapd: Path
    ctl_cyrusdb: Path
    saslpasswd2: Path


# --------------------------------------------------------------------------- binaries


def cyrus_binaries() -> CyrusBinaries:
    """Paths of the programs; raises :class:`CyrusNotInstalledError` naming what is missing."""
    master = _CYRUS_BIN / "master"
    ctl = _CYRUS_BIN / "ctl_cyrusdb"
    if not (os.access(master, os.X_OK) and os.access(ctl, os.X_OK)):
        raise CyrusNotInstalledError(f"Cyrus master not found in {_CYRUS_BIN}: {INSTALL_HINT}")
    env = os.environ.get("YIPPIEMOVE_CYRUS_IMAPD")
    candidates = (Path(env),) if env else _IMAPD_CANDIDATES
    imapd = next((p for p in candidates if os.access(p, os.X_OK)), None)
    if imapd is None:
        raise CyrusNotInstalledError(
            f"Cyrus imapd not found ({', '.join(map(str, candidates))}): {INSTALL_HINT}"
        )
    sasl = next((Path(p) for p in _SASLPASSWD if os.access(p, os.X_OK)), None)
    if sasl is None:
        raise CyrusNotInstalledError(f"saslpasswd2 not found: {INSTALL_HINT}")
    return CyrusBinaries(master, imapd, ctl, sasl)


def cyrus_available() -> bool:
    """True if Cyrus master, an imapd and saslpasswd2 are installed."""
    try:
        cyrus_binaries()
    except CyrusNotInstalledError:
        return False
    return True


# --------------------------------------------------------------------------- IMAP helpers


def _imap_date(when: datetime) -> bytes:
    """An IMAP date-time (RFC 3501) in when's own offset; naive means local time."""
    if when.tzinfo is None:
        when = when.astimezone()
    offset = when.utcoffset()
    assert offset is not None
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hh, mm = divmod(abs(minutes), 60)
    return (
        f'"{when.day:02d}-{_MONTHS[when.month - 1]}-{when.year:04d} '
        f'{when.hour:02d}:{when.minute:02d}:{when.second:02d} {sign}{hh:02d}{mm:02d}"'
    ).encode()


def _quoted(name: str) -> bytes:
    """A mailbox name in modified UTF-7, as an IMAP quoted string."""
    encoded = _mutf7(name)
    return b'"' + encoded.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


def _uid_set(text: bytes) -> list[int]:
    uids: list[int] = []
    for part in text.split(b","):
        lo, _, hi = part.partition(b":")
        first, last = int(lo), int(hi or lo)
        uids.extend(range(min(first, last), max(first, last) + 1))
    return uids


class _Session:
    """A minimal blocking IMAP client for loading mail, independent of yippiemove's own.

    Sends each command whole with non-synchronizing literals (LITERAL+, which Cyrus
    offers), so message bytes go out exactly as given (stdlib imaplib rewrites bare
    line endings in APPEND).
    """

    def __init__(self, host: str, port: int, user: str, password: str, timeout: float) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._reader = self._sock.makefile("rb")
        self._tag = 0
        greeting = self._line()
        if not greeting.startswith(b"* OK"):
            self.close()
            raise CyrusError(f"Cyrus greeted with {greeting!r}")
        login = self.command(
            b"LOGIN " + self._literal(user.encode()) + b" " + self._literal(password.encode())
        )
        if not login[0]:
            self.close()
            raise CyrusError(f"LOGIN as {user!r} failed: {login[1]}")

    @staticmethod
    def _literal(data: bytes) -> bytes:
        return b"{%d+}\r\n" % len(data) + data

    def _line(self) -> bytes:
        """One response line, literals included."""
        line = self._reader.readline()
        if not line:
            raise CyrusError("Cyrus closed the connection")
        while m := _LITERAL_END.search(line):
            line += self._reader.read(int(m.group(1)))
            line += self._reader.readline()
        return line

    def command(self, args: bytes, untagged: list[bytes] | None = None) -> tuple[bool, str, bytes]:
        """Send a command; (OK?, the tagged line's text, the tagged line).  The untagged
        lines (literals included) are added to ``untagged`` if given."""
        self._tag += 1
        tag = b"y%d" % self._tag
        self._sock.sendall(tag + b" " + args + b"\r\n")
        while True:
            line = self._line()
            if line.startswith(tag + b" "):
                rest = line[len(tag) + 1 :].rstrip(b"\r\n")
                return rest.startswith(b"OK"), rest.decode("utf-8", "replace"), rest
            if untagged is not None:
                untagged.append(line)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendall(b"z LOGOUT\r\n")
        with contextlib.suppress(OSError):
            self._reader.close()
            self._sock.close()

    def append(self, folder: str, batch: list[CyrusMessage]) -> tuple[bool, str, list[int]]:
        """One (MULTI)APPEND of the batch; (OK?, server text, UIDs)."""
        parts = [b"APPEND ", _quoted(folder)]
        for msg in batch:
            flags = " ".join(_iter_flags(msg.flags)).encode()
            parts.append(b" (" + flags + b")")
            if msg.internaldate is not None:
                parts.append(b" " + _imap_date(msg.internaldate))
            parts.append(b" " + self._literal(bytes(msg.raw)))
        ok, text, raw = self.command(b"".join(parts))
        m = _APPENDUID.search(raw)
        return ok, text, (_uid_set(m.group(2)) if ok and m else [])


# --------------------------------------------------------------------------- server

# Running servers, stopped at interpreter exit.  (A SIGKILLed test run leaks them:
# Cyrus runs in its own session so that stop() can kill its whole group.)
_running: set[CyrusServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.stop()


class CyrusServer(LocalServer):
    """A private Cyrus IMAP server on 127.0.0.1; see the module docstring.

    ``special_folders`` maps RFC 6154 attributes to folder names under ``INBOX.``
    (without the prefix) that every user gets.  ``eight_bit_headers`` is what Cyrus
    does with 8-bit bytes in an APPENDed message's header: ``"keep"`` them,
    ``"munge"`` them to ``X`` (Cyrus's stock default) or ``"reject"`` the message.
    ``extra_config`` lines are appended to the generated ``imapd.conf``.
    """

    kind = "Cyrus"
    error = CyrusError
    separator = "."
    prefix = "INBOX."

    def __init__(
        self,
        base_dir: Path | str,
        *,
        users: Mapping[str, str] | None = None,
        special_folders: Mapping[str, str] | None = None,
        eight_bit_headers: Literal["keep", "munge", "reject"] = "keep",
        extra_config: str = "",
    ) -> None:
        if eight_bit_headers not in ("keep", "munge", "reject"):
            raise ValueError(
                f"eight_bit_headers must be keep, munge or reject: {eight_bit_headers!r}"
            )
        specials = dict(DEFAULT_SPECIAL_FOLDERS if special_folders is None else special_folders)
        for use, name in specials.items():
            if use not in _SPECIAL_USES:
                raise ValueError(f"unknown special-use attribute {use!r}")
            if not name or name != name.strip() or any(c in name for c in '|."%*\\/\r\n'):
                raise ValueError(f"special folder name {name!r} cannot be configured")
        self.base_dir = Path(base_dir).absolute()
        self.special_folders: dict[str, str] = specials
        self.eight_bit_headers = eight_bit_headers
        self.extra_config = extra_config
        self._users: dict[str, str] = {}
        for name, password in (users or {}).items():
            self._check_user(name, password)
            self._users[name] = password
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._private: Path | None = None
        self._port: int | None = None
        self._tls_port: int | None = None
        self._root = os.geteuid() == 0
        if self._root:
            # master drops to the package's `cyrus` user; the files must be its
            try:
                cyrus = pwd.getpwnam("cyrus")
            except KeyError as exc:
                raise CyrusNotInstalledError(f"system user cyrus missing: {INSTALL_HINT}") from exc
        else:
            cyrus = pwd.getpwuid(os.geteuid())
        self.cyrus_user = cyrus.pw_name
        self.cyrus_uid = cyrus.pw_uid
        self.cyrus_gid = cyrus.pw_gid

    # ----------------------------------------------------------------- properties

    @property
    def log_path(self) -> Path:
        """The master's stdout and stderr."""
        return self.base_dir / "cyrus.log"

    @property
    def config_path(self) -> Path:
        """A copy of the generated imapd.conf."""
        return self.base_dir / "imapd.conf"

    def special_folder(self, use: str) -> str:
        """Full name (``INBOX.Sent Items``) of the folder with special-use attribute ``use``."""
        for attr, name in self.special_folders.items():
            if attr.lower() == use.lower():
                return self.prefix + name
        raise KeyError(use)

    def __repr__(self) -> str:
        state = f"port={self._port} tls_port={self._tls_port}" if self.running else "stopped"
        return f"<CyrusServer {self.base_dir} {state}>"

    # ----------------------------------------------------------------- lifecycle

    def start(self, timeout: float = START_TIMEOUT) -> CyrusServer:
        """Start Cyrus, wait for its greeting, make the users' mailboxes; returns self."""
        binaries = cyrus_binaries()
        with self._lock:
            if self._proc is not None:
                raise CyrusError("Cyrus server is already running")
            self.base_dir.mkdir(parents=True, exist_ok=True)
            tmp = "/tmp" if os.access("/tmp", os.W_OK | os.X_OK) else None
            self._private = Path(tempfile.mkdtemp(prefix="ymcy-", dir=tmp))
            try:
                os.chmod(self._private, 0o711)
                self._adopt_data()
                self._write_tls()
                for name, password in self._users.items():
                    self._saslpasswd(binaries, name, password)
                fixed = self._port is not None
                for attempt in range(5):
                    self._pick_ports(reuse=fixed and attempt == 0)
                    self._write_config(binaries)
                    if self._launch(binaries, timeout):
                        break
                else:
                    raise CyrusError("could not find free ports for Cyrus")
                _running.add(self)
                for name, password in self._users.items():
                    self._session(name, password).close()  # creates INBOX and specials
            except BaseException:
                _running.discard(self)
                self._cleanup()
                raise
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop Cyrus and every process it started; idempotent."""
        with self._lock:
            _running.discard(self)
            self._cleanup(timeout)

    def _launch(self, binaries: CyrusBinaries, timeout: float) -> bool:
        """Run the master; True when ready, False when a port was taken meanwhile."""
        assert self._private is not None
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = dict(os.environ)
        env.pop("CYRUS_USER", None)
        env.pop("CYRUS_GROUP", None)
        conf = str(self._private / "imapd.conf")
        services = str(self._private / "cyrus.conf")
        pidfile = str(self._private / "master.pid")
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [str(binaries.master), "-C", conf, "-M", services, "-p", pidfile],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,  # own process group: stop() kills all of it
                close_fds=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._kill_group(STOP_TIMEOUT)
                self._proc = None
                # master_bind_errors_fatal: a taken port makes master exit
                if not (_port_free(self.host, self.port) and _port_free(self.host, self.tls_port)):
                    return False
                raise CyrusError(
                    f"Cyrus master exited with status {code} during start-up (78: bad "
                    f"configuration; Cyrus logs the reason to syslog, with prefix "
                    f"yippiemove-cyrus); its stderr, {self.log_path}:\n"
                    f"{_tail(self._log_since(log_start))}"
                )
            if self._greets():
                return True
            if time.monotonic() > deadline:
                self._kill_group(STOP_TIMEOUT)
                self._proc = None
                raise CyrusError(
                    f"Cyrus did not answer on {self.host}:{self._port} within {timeout:.0f} s;"
                    f" log {self.log_path}:\n{_tail(self._log_since(log_start))}"
                )
            time.sleep(0.005)

    def _kill_group(self, timeout: float) -> None:
        """SIGTERM the whole process group (master then ends its children), then SIGKILL."""
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
            raise CyrusError(f"Cyrus processes {_group_members(pgid)} survived SIGKILL")

    def _cleanup(self, timeout: float = STOP_TIMEOUT) -> None:
        try:
            self._kill_group(timeout)
        finally:
            self._proc = None
            private, self._private = self._private, None
            if private is not None:
                link = self.base_dir / "data"
                if link.is_symlink():
                    link.unlink()
                    if (private / "data").exists():
                        shutil.move(str(private / "data"), str(link))
                shutil.rmtree(private, ignore_errors=True)

    # ----------------------------------------------------------------- files

    def _chown(self, path: Path) -> None:
        if self._root:
            os.lchown(path, self.cyrus_uid, self.cyrus_gid)

    def _chown_tree(self, top: Path) -> None:
        self._chown(top)
        for root, dirs, files in os.walk(top):
            for name in dirs + files:
                self._chown(Path(root, name))

    def _adopt_data(self) -> None:
        """Move base_dir/data into the private dir and leave a symlink in its place."""
        assert self._private is not None
        link = self.base_dir / "data"
        target = self._private / "data"
        if link.is_symlink():
            link.unlink()  # left over from a run that did not stop
        if link.exists():
            shutil.move(str(link), str(target))
        else:
            target.mkdir(mode=0o700)
        for sub in ("config", "spool"):
            (target / sub).mkdir(mode=0o700, exist_ok=True)
        # Cyrus stages every APPENDed message in PARTITION/stage./ and makes that directory
        # on first use (append_newstage: fopen, else mkdir, else fail).  With APPENDs on
        # several connections at once we saw about one run in 15 fail an APPEND before
        # its literal was read, so the message bytes were parsed as commands ("From: BAD
        # Unrecognized command"; the mover reconnects and retries).  Made beforehand,
        # it did not happen in 45 runs.
        (target / "spool" / "stage.").mkdir(mode=0o755, exist_ok=True)
        self._chown_tree(target)
        link.symlink_to(target)

    def _write_tls(self) -> None:
        assert self._private is not None
        ssl_dir = self.base_dir / "ssl"
        ssl_dir.mkdir(exist_ok=True)
        private_ssl = self._private / "ssl"
        private_ssl.mkdir(mode=0o700)
        self._chown(private_ssl)
        for name, data in _tls_material().items():
            path = ssl_dir / name
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
            copy = private_ssl / name
            copy.write_bytes(data)
            os.chmod(copy, 0o600)
            self._chown(copy)
        os.chmod(ssl_dir / "server.key", 0o600)

    def _sasldb(self) -> Path:
        assert self._private is not None
        return self._private / "data" / "sasldb2"

    def _saslpasswd(self, binaries: CyrusBinaries, user: str, password: str) -> None:
        """Set the user's password in the private sasldb (password on stdin, not argv)."""
        done = subprocess.run(
            [str(binaries.saslpasswd2), "-f", str(self._sasldb()), "-u", SERVERNAME, "-cp", user],
            input=password.encode() + b"\n",
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise CyrusError(
                f"saslpasswd2 failed for user {user!r}: {done.stderr.decode(errors='replace').strip()}"
            )
        self._chown(self._sasldb())

    def _write_config(self, binaries: CyrusBinaries) -> None:
        assert self._private is not None
        p = self._private
        data = p / "data"
        specials = list(self.special_folders.items())
        folders = " | ".join(name for _, name in specials)
        eight_bit = {
            "keep": ["munge8bit: no", "reject8bit: no"],
            "munge": ["munge8bit: yes", "reject8bit: no"],
            "reject": ["reject8bit: yes"],
        }[self.eight_bit_headers]
        imapd = [
            "# Generated by tests.doubles.cyrus; rewritten on every start.",
            f"configdirectory: {data / 'config'}",
            f"partition-default: {data / 'spool'}",
            "defaultpartition: default",
            f"servername: {SERVERNAME}",
            f"cyrus_user: {self.cyrus_user}",
            # the classic namespace: INBOX. prefix, "." separator
            "altnamespace: no",
            "unixhierarchysep: no",
            # passwords from our own sasldb; plain LOGIN without TLS (loopback tests)
            "allowplaintext: yes",
            "sasl_pwcheck_method: auxprop",
            "sasl_auxprop_plugin: sasldb",
            f"sasl_sasldb_path: {self._sasldb()}",
            "sasl_mech_list: PLAIN LOGIN",
            "sasl_auto_transition: no",
            # no 3 s pause after a failed login (tests try wrong passwords)
            "failedloginpause: 0",
            f"tls_server_cert: {p / 'ssl' / 'server.pem'}",
            f"tls_server_key: {p / 'ssl' / 'server.key'}",
            # a user's INBOX and special folders come on the first login; no quota
            "autocreate_quota: 0",
            *(
                [f"autocreate_inbox_folders: {folders}", f"autocreate_subscribe_folders: {folders}"]
                if specials
                else []
            ),
            *(f"xlist-{use[1:].lower()}: {name}" for use, name in specials),
            *eight_bit,
            f"lmtpsocket: {p / 'socket' / 'lmtp'}",
            f"idlesocket: {p / 'socket' / 'idle'}",
            f"notifysocket: {p / 'socket' / 'notify'}",
            f"proc_path: {p / 'proc'}",
            f"mboxname_lockpath: {p / 'lock'}",
            # a taken port makes master exit (we pick other ports) instead of idling
            "master_bind_errors_fatal: yes",
            "syslog_prefix: yippiemove-cyrus",
            "umask: 077",
        ]
        if self.extra_config:
            imapd.append(self.extra_config)
        conf = f"-C {p / 'imapd.conf'}"
        cyrus = [
            "# Generated by tests.doubles.cyrus; rewritten on every start.",
            "START {",
            f'  recover cmd="{binaries.ctl_cyrusdb} {conf} -r"',
            "}",
            "SERVICES {",
            # one imapd forked ahead: the first greeting comes sooner
            f'  imap cmd="{binaries.imapd} {conf}" listen="{self.host}:{self.port}" prefork=1',
            f'  imaps cmd="{binaries.imapd} -s {conf}" listen="{self.host}:{self.tls_port}"'
            " prefork=0",
            "}",
            "EVENTS {",
            "}",
        ]
        for sub in ("socket", "proc", "lock"):
            (p / sub).mkdir(mode=0o700, exist_ok=True)
            self._chown(p / sub)
        for name, lines in (("imapd.conf", imapd), ("cyrus.conf", cyrus)):
            text = "\n".join(lines) + "\n"
            (p / name).write_text(text)
            os.chmod(p / name, 0o644)
            (self.base_dir / name).write_text(text)

    # ----------------------------------------------------------------- users

    @staticmethod
    def _check_user(name: str, password: str) -> None:
        if not _USER_RE.fullmatch(name):
            # Cyrus lower-cases nothing for us and "." is its separator: keep names simple
            raise ValueError(f"bad user name {name!r} (lower-case letters, digits, _ and -)")
        if not isinstance(password, str):
            raise TypeError("password must be a str")
        if not password or any(c in password for c in "\r\n\0"):
            raise ValueError("password must be non-empty, without CR, LF or NUL")

    def add_user(self, name: str, password: str) -> None:
        """Add a user or change a password; while running, also creates the mailboxes."""
        self._check_user(name, password)
        with self._lock:
            self._users[name] = password
            if self.running:
                self._saslpasswd(cyrus_binaries(), name, password)
                self._session(name, password).close()

    def _session(self, user: str, password: str | None = None) -> _Session:
        if password is None:
            if user not in self._users:
                raise ValueError(f"unknown user {user!r}: add_user() first")
            password = self._users[user]
        if not self.running:
            raise CyrusError("Cyrus server is not running")
        return _Session(self.host, self.port, user, password, timeout=60)

    @contextlib.contextmanager
    def session(self, user: str) -> Iterator[_Session]:
        """A logged-in minimal client (``.command(b"...")``) for setting things up."""
        s = self._session(user)
        try:
            yield s
        finally:
            s.close()

    def check_login(self, user: str, password: str) -> bool:
        """Whether LOGIN with these credentials succeeds."""
        try:
            self._session(user, password).close()
        except CyrusError:
            return False
        return True

    # ----------------------------------------------------------------- mail

    def create_folder(self, user: str, folder: str, *, subscribe: bool = True) -> None:
        """Create a folder (full name, e.g. ``INBOX.Archive``; Unicode) if it is missing."""
        with self.session(user) as s:
            self._create(s, folder, subscribe=subscribe)

    @staticmethod
    def _create(s: _Session, folder: str, *, subscribe: bool) -> None:
        ok, text, raw = s.command(b"CREATE " + _quoted(folder))
        if not ok and b"ALREADYEXISTS" not in raw.upper() and "already exists" not in text:
            raise CyrusError(f"CREATE {folder!r} failed: {text}")
        if subscribe:
            ok, text, _ = s.command(b"SUBSCRIBE " + _quoted(folder))
            if not ok:
                raise CyrusError(f"SUBSCRIBE {folder!r} failed: {text}")

    def deliver(
        self,
        user: str,
        folder: str,
        raw: bytes,
        flags: Iterable[str] = (),
        internaldate: datetime | None = None,
    ) -> int:
        """APPEND one message (bytes as given); returns its UID.  See :meth:`deliver_many`."""
        if isinstance(flags, str):
            raise TypeError("flags must be an iterable of str, not a str")
        return self.deliver_many(user, folder, [CyrusMessage(raw, tuple(flags), internaldate)])[0]

    def deliver_many(
        self, user: str, folder: str, items: Iterable[CyrusMessage | bytes]
    ) -> list[int]:
        """APPEND messages to ``folder`` (full name, Unicode) in order; returns their UIDs.

        Uses MULTIAPPEND in batches of a few MB, so a refused message fails its whole
        batch (:class:`CyrusError` with the server's words; earlier batches stay).  A
        missing folder is created (and subscribed) on the server's ``[TRYCREATE]``.
        Message bytes are sent exactly as given; Cyrus refuses some (module docstring).
        """
        messages = [m if isinstance(m, CyrusMessage) else CyrusMessage(m) for m in items]
        for msg in messages:
            if not isinstance(msg.raw, bytes | bytearray | memoryview):
                raise TypeError("raw message must be bytes")
            list(_iter_flags(msg.flags))  # validate before anything is sent
        uids: list[int] = []
        with self.session(user) as s:
            batch: list[CyrusMessage] = []
            size = 0
            for msg in [*messages, None]:
                if msg is not None and (not batch or size + len(msg.raw) <= _BATCH_BYTES):
                    batch.append(msg)
                    size += len(msg.raw)
                    continue
                if batch:
                    uids += self._append(s, folder, batch)
                if msg is not None:
                    batch, size = [msg], len(msg.raw)
        return uids

    def fresh_folders(self, user: str) -> list[str]:
        """The folders of a new account, as :meth:`snapshot` names them (modified UTF-7):
        INBOX and the special folders made at the first login."""
        return ["INBOX", *(_mutf7(self.prefix + name) for name in self.special_folders.values())]

    def snapshot(
        self, user: str
    ) -> dict[str, tuple[int | None, dict[int, tuple[frozenset[str], str]]]]:
        """The account as the source-untouched guard compares it (tests/source_guard.py):
        folder (as the server spells it) -> (UIDVALIDITY, UID -> (flags, sha256 of the
        bytes)); read with EXAMINE and BODY.PEEK, so it changes nothing (``\\Recent`` is
        left out)."""
        out: dict[str, tuple[int | None, dict[int, tuple[frozenset[str], str]]]] = {}
        s = self._session(user)  # not session(): the guard wraps that one
        with contextlib.closing(s):
            listed: list[bytes] = []
            ok, text, _ = s.command(b'LIST "" "*"', listed)
            if not ok:
                raise CyrusError(f"LIST failed: {text}")
            for line in listed:
                m = _LIST_LINE.match(line)
                if m is None:
                    continue
                attrs, name = m.group(1).lower(), m.group(2)
                if name.startswith(b'"'):
                    name = re.sub(rb"\\(.)", rb"\1", name[1:-1])
                elif lit := re.match(rb"\{(\d+)\}\r\n", name):
                    name = name[lit.end() : lit.end() + int(lit.group(1))]
                key = name.decode("utf-8", "replace")
                if b"\\noselect" in attrs or b"\\nonexistent" in attrs:
                    out[key] = (None, {})
                    continue
                got: list[bytes] = []
                ok, text, _ = s.command(b"EXAMINE " + s._literal(name), got)
                if not ok:
                    raise CyrusError(f"EXAMINE {key!r} failed: {text}")
                validity = next(
                    (int(v.group(1)) for line in got if (v := _UIDVALIDITY.search(line))), None
                )
                fetched: list[bytes] = []
                ok, text, _ = s.command(b"UID FETCH 1:* (UID FLAGS BODY.PEEK[])", fetched)
                if not ok and "no matching" not in text.lower():
                    raise CyrusError(f"UID FETCH in {key!r} failed: {text}")
                msgs: dict[int, tuple[frozenset[str], str]] = {}
                for line in fetched:
                    body = _FETCH_BODY.search(line)
                    if body is None:
                        continue
                    end = body.end() + int(body.group(1))
                    raw, rest = line[body.end() : end], line[: body.start()] + line[end:]
                    uid, flags = _FETCH_UID.search(rest), _FETCH_FLAGS.search(rest)
                    if uid is None or flags is None:
                        continue
                    names = frozenset(
                        f for f in flags.group(1).decode().split() if f.lower() != "\\recent"
                    )
                    msgs[int(uid.group(1))] = (names, hashlib.sha256(raw).hexdigest())
                out[key] = (validity, msgs)
        return out

    def _append(self, s: _Session, folder: str, batch: list[CyrusMessage]) -> list[int]:
        ok, text, got = s.append(folder, batch)
        if not ok and "[TRYCREATE]" in text.upper():
            self._create(s, folder, subscribe=True)
            ok, text, got = s.append(folder, batch)
        if not ok:
            raise CyrusError(f"APPEND to {folder!r} refused: {text}")
        if len(got) != len(batch):
            raise CyrusError(f"APPEND to {folder!r}: no APPENDUID for each message ({text})")
        return got
