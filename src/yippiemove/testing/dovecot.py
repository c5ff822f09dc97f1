"""Throwaway, real Dovecot IMAP servers on 127.0.0.1 for tests, benchmarks and demos.

:class:`DovecotServer` writes a complete Dovecot 2.3 configuration of its own (nothing
from ``/etc/dovecot`` is read), runs ``dovecot -c OURCONF -F`` as a child process in
its own session, waits until the IMAP port answers ``* OK`` and kills the whole
process group on :meth:`DovecotServer.stop`::

    with DovecotServer(tmp_path, users={"alice": "secret"}) as server:
        imap = imaplib.IMAP4(server.host, server.port)

Layout of ``base_dir``::

    dovecot.conf   the generated configuration (``doveadm -c`` works with it)
    dovecot.log    everything Dovecot logs (nothing goes to the test run's stderr)
    ssl/           ca.pem (give it to clients), server.pem, server.key
    mail/USER/Maildir   the users' mail (a symlink while the server runs, see below)

Unix sockets need short paths (108 bytes) and, when we run as root, Dovecot's mail
and auth processes run as the unprivileged ``dovecot`` user, which cannot enter a
private ``base_dir`` such as pytest's ``tmp_path`` (``/tmp/pytest-of-root`` is 0700).
So while the server runs, its sockets, passwd-file and the mail live in a private
directory under ``/tmp`` (mode 0711); ``base_dir/mail`` is then a symlink to that mail
and is moved back into ``base_dir`` by :meth:`DovecotServer.stop`, so the same paths
work before, during and after a run (and a restart keeps the mail).

Running as root (CI does), Dovecot refuses mail access as root, so the passwd-file
gives every user the uid/gid of the Debian package's ``dovecot`` user
(``first_valid_uid`` is lowered to it) and login processes run as ``dovenull``; as
any other user, everything runs as that user (no chroot for login processes).

Good to know when writing tests: a failed login takes about 0.5 s (Dovecot 2.3
answers auth failures from a queue it checks every 500 ms; its 2 s
``auth_failure_delay`` and the growing per-IP "auth penalty" are turned off here).
Shutdown is SIGTERM to the whole process group, so the last log lines after
"yippiemove: stopping" may hold harmless errors such as ``read(anvil) failed``.

Line endings (checked with Dovecot 2.3.19): Dovecot serves maildir files with CRLF
line endings: every bare LF in a file is sent as CRLF, CRLF stays CRLF, a bare CR is
sent as it is, and RFC822.SIZE counts the CRLF form.  On APPEND it stores mail with
bare LF line endings (``mail_save_crlf = no``), so a message APPENDed with CRLF comes
back byte-identical, but bare LFs in an APPENDed message come back as CRLF.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import grp
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
from base64 import b64encode
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from ._server import LocalServer

__all__ = [
    "DovecotError",
    "DovecotNotInstalledError",
    "DovecotServer",
    "MaildirMessage",
    "dovecot_available",
    "dovecot_binary",
]

INSTALL_HINT = "install Debian package dovecot-imapd (apt-get install dovecot-imapd)"
_SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")
_IMAP_BINARIES = (
    "/usr/lib/dovecot/imap",
    "/usr/libexec/dovecot/imap",
    "/usr/local/libexec/dovecot/imap",
)
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
TERM_GRACE = 0.25

# System flags and their Maildir "info" letters (https://cr.yp.to/proto/maildir.html).
# 'P' (passed) has no IMAP system flag; Dovecot keeps $Forwarded as a keyword.
_FLAG_LETTERS = {
    "\\draft": "D",
    "\\flagged": "F",
    "\\answered": "R",
    "\\seen": "S",
    "\\deleted": "T",
}
# Dovecot's maildir keeps at most 26 keywords per folder as letters a-z in the file
# name, numbered in the folder's ``dovecot-keywords`` file (MAILDIR_MAX_KEYWORDS).
_MAX_KEYWORDS = 26
_KEYWORDS_FILE = "dovecot-keywords"
_SUBSCRIPTIONS_FILE = "subscriptions"
_ATOM_SPECIALS = set('(){ %*"\\]')
# As Debian's conf.d/15-mailboxes.conf: SPECIAL-USE (RFC 6154) attributes for these
# folders when they exist (auto = no), which makes Dovecot offer SPECIAL-USE.
_SPECIAL_USE = {
    "Drafts": "\\Drafts",
    "Junk": "\\Junk",
    "Trash": "\\Trash",
    "Sent": "\\Sent",
    "Sent Messages": "\\Sent",
}


def _special_use_config(spec: bool | Mapping[str, str]) -> list[str]:
    """``mailbox`` blocks giving folders RFC 6154 attributes: the default set for True."""
    marks = _SPECIAL_USE if spec is True else ({} if spec is False else dict(spec))
    lines: list[str] = []
    for name, use in marks.items():
        if '"' in name or "\\" in name or not name:
            raise ValueError(f"special_use: cannot configure a folder named {name!r}")
        lines.append(f'  mailbox "{name}" {{\n    special_use = {use}\n  }}')
    return lines


_USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")


class DovecotError(RuntimeError):
    """Dovecot could not be started, or stopped, or used as asked."""


class DovecotNotInstalledError(DovecotError):
    """The dovecot binaries are missing."""


@dataclass(frozen=True)
class MaildirMessage:
    """One message for :meth:`DovecotServer.deliver_many`.

    ``flags`` holds IMAP system flags (``\\Seen``...) and keywords; a naive
    ``internaldate`` is local time; ``None`` means now.
    """

    raw: bytes
    flags: tuple[str, ...] = ()
    internaldate: datetime | None = None


# --------------------------------------------------------------------------- binaries


def _which(name: str) -> str | None:
    path = os.environ.get("PATH", os.defpath) + os.pathsep + os.pathsep.join(_SBIN_DIRS)
    return shutil.which(name, path=path)


@functools.cache
def _imap_binary_present() -> bool:
    return any(os.access(p, os.X_OK) for p in _IMAP_BINARIES)


def dovecot_binary() -> str:
    """Path of the ``dovecot`` master binary; raises :class:`DovecotNotInstalledError`."""
    path = _which("dovecot")
    if path is None:
        raise DovecotNotInstalledError(f"dovecot binary not found: {INSTALL_HINT}")
    if not _imap_binary_present():
        raise DovecotNotInstalledError(
            f"dovecot is installed but its imap server is not: {INSTALL_HINT}"
        )
    return path


def dovecot_available() -> bool:
    """True if Dovecot with its IMAP server is installed."""
    try:
        dovecot_binary()
    except DovecotNotInstalledError:
        return False
    return True


# --------------------------------------------------------------------------- TLS


_cert_lock = threading.Lock()
_cert_cache: dict[tuple[str, ...], dict[str, bytes]] = {}


def _tls_material(extra_addresses: tuple[str, ...] = ()) -> dict[str, bytes]:
    """A self-signed CA and a server certificate for localhost/127.0.0.1/::1 and
    ``extra_addresses`` (IP addresses, e.g. a test fleet's bridge: bench/fleet.py).

    Made once per process and set of addresses with the openssl CLI (dovecot-core
    depends on openssl); EC P-256 keys, so it takes a few milliseconds.
    """
    with _cert_lock:
        cached = _cert_cache.get(extra_addresses)
        if cached:
            return cached
        names = "DNS:localhost, IP:127.0.0.1, IP:::1" + "".join(
            f", IP:{a}" for a in extra_addresses
        )
        openssl = _which("openssl")
        if openssl is None:
            raise DovecotNotInstalledError("openssl binary not found: apt-get install openssl")
        with tempfile.TemporaryDirectory(prefix="yippiemove-tls-") as tmp:
            d = Path(tmp)
            (d / "server.ext").write_text(
                "basicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, digitalSignature, keyEncipherment\n"
                "extendedKeyUsage = serverAuth\n"
                f"subjectAltName = {names}\n"
                "subjectKeyIdentifier = hash\n"
                "authorityKeyIdentifier = keyid:always\n"
            )
            ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
            steps = [
                [openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem",
                 "-days", "3650", "-subj", "/CN=yippiemove test CA",
                 "-addext", "basicConstraints = critical, CA:TRUE",
                 "-addext", "keyUsage = critical, keyCertSign, cRLSign",
                 "-addext", "subjectKeyIdentifier = hash"],
                [openssl, "req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr",
                 "-subj", "/CN=localhost"],
                [openssl, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem",
                 "-CAkey", "ca.key", "-CAcreateserial", "-days", "3650",
                 "-extfile", "server.ext", "-out", "server.pem"],
            ]  # fmt: skip
            for argv in steps:
                done = subprocess.run(argv, cwd=d, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise DovecotError(f"{' '.join(argv[:3])} failed: {done.stderr.strip()}")
            material = {n: (d / n).read_bytes() for n in ("ca.pem", "server.pem", "server.key")}
        _cert_cache[extra_addresses] = material
        return material


# --------------------------------------------------------------------------- helpers


def _mutf7(name: str) -> str:
    """Encode a mailbox name in IMAP's modified UTF-7 (RFC 3501 section 5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.append("&" + b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group pgid."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry.name))
    return members


def _alive(pid: int) -> bool:
    """Whether pid exists and is no zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def _tabescape(s: str) -> str:
    """Dovecot's str_append_tabescaped(), used in subscriptions files (version 2)."""
    return (
        s.replace("\x01", "\x011").replace("\t", "\x01t").replace("\r", "\x01r")
        .replace("\n", "\x01n")
    )  # fmt: skip


_stamp_lock = threading.Lock()
_last_stamp = 0  # microseconds since the epoch
_sequence = 0


def _next_basename() -> str:
    """A unique maildir base name whose time part grows strictly.

    Dovecot gives new files their UIDs in the order of the time stamp in their names
    (maildir_filename_sort_cmp: seconds, then the ``.M`` microseconds), so files
    delivered later get higher UIDs.
    """
    global _last_stamp, _sequence
    with _stamp_lock:
        stamp = max(time.time_ns() // 1000, _last_stamp + 1)
        _last_stamp = stamp
        _sequence += 1
        seq = _sequence
    secs, usecs = divmod(stamp, 1_000_000)
    return f"{secs}.M{usecs}P{os.getpid()}Q{seq}.yippiemove"


def _vsize(raw: bytes) -> int:
    """Size with every bare LF counted as CRLF, as Dovecot serves it (W= in names)."""
    return len(raw) + raw.count(b"\n") - raw.count(b"\r\n")


# --------------------------------------------------------------------------- server

# Running servers, stopped at interpreter exit.  (A SIGKILLed test run leaks them:
# Dovecot runs in its own session so that stop() can kill its whole group.)
_running: set[DovecotServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.stop()


class DovecotServer(LocalServer):
    """A private Dovecot IMAP server on 127.0.0.1; see the module docstring.

    ``separator`` and ``prefix`` go into the inbox namespace.  ``layout`` is the
    maildir layout: ``"fs"`` (folders as nested directories) or ``"maildir++"``
    (``.a.b`` directories); by default ``"maildir++"`` for separator ``"."`` and
    ``"fs"`` otherwise.  ``max_message_size`` (bytes) makes APPEND of larger
    messages fail with ``NO [LIMIT]``; Dovecot compares it with the message's size
    in CRLF form.  ``special_use`` (True) marks Drafts, Junk, Trash, Sent and "Sent
    Messages" with their RFC 6154 attributes, as Debian's stock configuration does;
    a mapping ``{folder name: attribute}`` (``{"Sent Items": "\\Sent"}``) marks those
    folders instead (names with the server's separator); False marks none.
    ``extra_config`` is appended to the generated configuration.  ``listen_addresses``:
    more addresses to listen on besides 127.0.0.1 (a test fleet's bridge).
    """

    kind = "Dovecot"
    error = DovecotError

    def __init__(
        self,
        base_dir: Path | str,
        *,
        separator: str = "/",
        prefix: str = "",
        users: dict[str, str] | None = None,
        extra_config: str = "",
        max_message_size: int | None = None,
        layout: Literal["fs", "maildir++"] | None = None,
        special_use: bool | Mapping[str, str] = True,
        mail_root: Path | str | None = None,
        change_log: bool = False,
        listen_addresses: Iterable[str] = (),
        tls_addresses: Iterable[str] = (),
        oauth2_introspection_url: str | None = None,
        oauth2_app_tokens: bool = False,
    ) -> None:
        if len(separator) != 1 or separator in '"\\\r\n\0':
            raise ValueError(f"bad namespace separator {separator!r}")
        if layout is None:
            layout = "maildir++" if separator == "." else "fs"
        if layout not in ("fs", "maildir++"):
            raise ValueError(f"layout must be 'fs' or 'maildir++', not {layout!r}")
        if max_message_size is not None and max_message_size <= 0:
            raise ValueError("max_message_size must be positive")
        self.base_dir = Path(base_dir).absolute()
        self.separator = separator
        self.prefix = prefix
        self.layout: Literal["fs", "maildir++"] = layout
        self.extra_config = extra_config
        self.max_message_size = max_message_size
        self.special_use = special_use
        #: Keep the mail under this directory (e.g. a tmpfs for benchmarks) instead of
        #: /tmp; it is then left there at stop (base_dir/mail stays a symlink to it).
        self.mail_root = Path(mail_root).absolute() if mail_root is not None else None
        #: Log every change IMAP clients make to a mailbox (Dovecot's mail_log plugin:
        #: saves, copies, expunges, flag changes, folders created, renamed, deleted), read
        #: back by :meth:`changes` (the tests' source-untouched guard).  Off by default:
        #: the benchmarks measure the server without it.
        self.change_log = change_log
        #: More addresses to listen on, besides 127.0.0.1 (``host``), with the same
        #: ports: e.g. a test fleet's bridge (tests/fleet.py), which hosts in network
        #: namespaces reach.  The certificate names loopback only: plain IMAP there.
        self.listen_addresses = tuple(a for a in listen_addresses if a != self.host)
        for address in self.listen_addresses:
            if not re.fullmatch(r"[0-9A-Fa-f.:]+", address):
                raise ValueError(f"listen_addresses: {address!r} is not an IP address")
        #: More IP addresses the TLS certificate names besides loopback: clients that
        #: reach the TLS port through one (a proxy on a fleet's bridge) verify it.
        self.tls_addresses = tuple(tls_addresses)
        for address in self.tls_addresses:
            if not re.fullmatch(r"[0-9A-Fa-f.:]+", address):
                raise ValueError(f"tls_addresses: {address!r} is not an IP address")
        #: OAuth2 (issue 16): an RFC 7662 introspection endpoint (credentials in the URL,
        #: ``http://ID:SECRET@HOST:PORT/introspect``).  When set, Dovecot also offers
        #: ``AUTH=XOAUTH2`` and ``AUTH=OAUTHBEARER`` and checks their tokens with its
        #: ``oauth2`` passdb at that URL (POST ``token=...``) on every login, no cache: the
        #: token's ``email`` must be the user's name (lower case) and ``active`` true.
        #: PLAIN/LOGIN still check the passwd-file, so users keep their passwords.
        self.oauth2_introspection_url = oauth2_introspection_url
        if oauth2_introspection_url is not None and any(
            c in oauth2_introspection_url for c in '\r\n\0"<>?#'
        ):
            # a query makes Dovecot 2.3.19's auth process panic in introspection_mode post
            # (http_client_request_set_payload: assertion failed)
            raise ValueError("oauth2_introspection_url: no query, fragment or quotes")
        #: Also take application tokens (client credentials, as a Microsoft 365 app with
        #: IMAP access to a tenant) for any user of the token's domain: a second oauth2
        #: passdb compares the domain of the introspection's ``app_user`` with the login
        #: name's (``username_format = %Ld``).  Needs the test provider's
        #: ``dovecot_introspection_url``; a refused token is then introspected twice.
        self.oauth2_app_tokens = oauth2_app_tokens
        self._mail_dir: Path | None = None
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
            # Dovecot refuses mail access as root (mail-storage-service:
            # "Mail access not allowed for root"), so mail and auth run as the
            # Debian package's `dovecot` user and login processes as `dovenull`.
            try:
                mail_pw = pwd.getpwnam("dovecot")
                pwd.getpwnam("dovenull")
            except KeyError as exc:
                raise DovecotNotInstalledError(
                    f"system users dovecot/dovenull missing: {INSTALL_HINT}"
                ) from exc
            self._login_user = "dovenull"
            self._internal_user = "dovecot"
        else:
            mail_pw = pwd.getpwuid(os.geteuid())
            self._login_user = self._internal_user = mail_pw.pw_name
        self.mail_uid = mail_pw.pw_uid
        self.mail_gid = mail_pw.pw_gid
        self._internal_group = grp.getgrgid(mail_pw.pw_gid).gr_name

    # ----------------------------------------------------------------- properties

    @property
    def log_path(self) -> Path:
        """Dovecot's log file (all levels)."""
        return self.base_dir / "dovecot.log"

    @property
    def config_path(self) -> Path:
        """The generated dovecot.conf."""
        return self.base_dir / "dovecot.conf"

    def maildir(self, user: str) -> Path:
        """The user's Maildir root (INBOX) under ``base_dir/mail``."""
        return self.base_dir / "mail" / user / "Maildir"

    def __repr__(self) -> str:
        state = f"port={self._port} tls_port={self._tls_port}" if self.running else "stopped"
        return f"<DovecotServer {self.base_dir} separator={self.separator!r} {state}>"

    # ----------------------------------------------------------------- lifecycle

    def start(self, timeout: float = START_TIMEOUT) -> DovecotServer:
        """Start Dovecot and wait until it greets with ``* OK``; returns self."""
        binary = dovecot_binary()
        with self._lock:
            if self._proc is not None:
                raise DovecotError("Dovecot server is already running")
            self.base_dir.mkdir(parents=True, exist_ok=True)
            self._write_tls()
            # /tmp even if TMPDIR is set: unix socket paths must stay short
            tmp = "/tmp" if os.access("/tmp", os.W_OK | os.X_OK) else None
            self._private = Path(tempfile.mkdtemp(prefix="ymdc-", dir=tmp))
            try:
                os.chmod(self._private, 0o711)
                (self._private / "state").mkdir()
                self._adopt_mail()
                self._write_passwd()
                fixed = self._port is not None
                for attempt in range(5):
                    self._pick_ports(reuse=fixed and attempt == 0)
                    self._write_config()
                    if self._launch(binary, timeout):
                        break
                else:
                    raise DovecotError("could not find free ports for Dovecot")
            except BaseException:
                self._cleanup()
                raise
            _running.add(self)
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop Dovecot and every process it started; idempotent."""
        with self._lock:
            _running.discard(self)
            self._cleanup(timeout)

    def _launch(self, binary: str, timeout: float) -> bool:
        """Run the master; True when ready, False when a port was taken meanwhile."""
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [binary, "-c", str(self.config_path), "-F"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # own process group: stop() kills all of it
                close_fds=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                self._kill_group(STOP_TIMEOUT)
                log_text = self._log_since(log_start)
                self._proc = None
                if "Address already in use" in log_text:
                    return False
                raise DovecotError(
                    f"Dovecot exited during start-up; log {self.log_path}:\n{_tail(log_text)}"
                )
            if self._greets():
                return True
            if time.monotonic() > deadline:
                self._kill_group(STOP_TIMEOUT)
                self._proc = None
                raise DovecotError(
                    f"Dovecot did not answer on {self.host}:{self._port} within "
                    f"{timeout:.0f} s; log {self.log_path}:\n"
                    f"{_tail(self._log_since(log_start))}"
                )
            time.sleep(0.003)

    def _kill_group(self, timeout: float) -> None:
        """SIGTERM the whole process group, then SIGKILL the master and any rest.

        Signalled alone, the master waits about a second for its children to close
        their listeners; signalled together, the children (imap sessions, auth,
        log...) exit within milliseconds, but the master still sleeps in steps of
        100 ms.  Once its children are gone (or after TERM_GRACE seconds) it has
        nothing left to do but exit, so it is SIGKILLed.
        """
        proc = self._proc
        if proc is None:
            return
        pgid = proc.pid
        if proc.poll() is None or _group_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + min(TERM_GRACE, timeout)
        while time.monotonic() < deadline:
            if not [pid for pid in _group_members(pgid) if pid != pgid]:
                break
            time.sleep(0.002)
        if proc.poll() is None or _group_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while (proc.poll() is None or _group_members(pgid)) and time.monotonic() < deadline:
            time.sleep(0.002)
        if proc.poll() is None or _group_members(pgid):
            raise DovecotError(f"Dovecot processes {_group_members(pgid)} survived SIGKILL")

    def _cleanup(self, timeout: float = STOP_TIMEOUT) -> None:
        try:
            if self._proc is not None and self._proc.poll() is None:
                with contextlib.suppress(OSError), open(self.log_path, "a") as log:
                    # what Dovecot logs after this line is shutdown noise
                    log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} yippiemove: stopping\n")
            self._kill_group(timeout)
        finally:
            self._proc = None
            private, self._private = self._private, None
            if private is not None:
                link = self.base_dir / "mail"
                if link.is_symlink() and self.mail_root is None:
                    link.unlink()
                    if (private / "mail").exists():
                        shutil.move(str(private / "mail"), str(link))
                shutil.rmtree(private, ignore_errors=True)

    # ----------------------------------------------------------------- files

    def _adopt_mail(self) -> None:
        """Move base_dir/mail into the private dir and leave a symlink in its place."""
        assert self._private is not None
        link = self.base_dir / "mail"
        target = self._private / "mail"
        if self.mail_root is not None:
            if self._mail_dir is None:
                self.mail_root.mkdir(parents=True, exist_ok=True)
                self._mail_dir = Path(tempfile.mkdtemp(prefix="ymdc-mail-", dir=self.mail_root))
                os.chmod(self._mail_dir, 0o711)
            target = self._mail_dir / "mail"
            if link.is_symlink() and link.resolve() == target.resolve():
                link.unlink()
                self._chown(target)
                link.symlink_to(target)
                return
        if link.is_symlink():
            link.unlink()  # left over from a run that did not stop
        if link.exists():
            shutil.move(str(link), str(target))
        else:
            target.mkdir(mode=0o700)
        self._chown(target)
        if self._root:
            # mail copied in by hand as root: hand it to the mail user
            for entry in os.scandir(target):
                if entry.stat(follow_symlinks=False).st_uid != self.mail_uid:
                    self._chown_tree(Path(entry.path))
        link.symlink_to(target)

    def _chown_tree(self, top: Path) -> None:
        self._chown(top)
        for root, dirs, files in os.walk(top):
            for name in dirs + files:
                self._chown(Path(root, name))

    def _write_tls(self) -> None:
        ssl_dir = self.base_dir / "ssl"
        ssl_dir.mkdir(exist_ok=True)
        for name, data in _tls_material(self.tls_addresses).items():
            path = ssl_dir / name
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
        os.chmod(ssl_dir / "server.key", 0o600)

    def _passwd_line(self, user: str, password: str) -> str:
        if any(c in password for c in ":\r\n\0") or password.startswith("{"):
            secret = "{PLAIN.BASE64}" + b64encode(password.encode()).decode()
        else:
            secret = "{PLAIN}" + password
        home = self.base_dir / "mail" / user
        if self._private is not None:
            home = (self._mail_dir or self._private) / "mail" / user
        # user:password:uid:gid:gecos:home:shell:extra_fields (Dovecot passwd-file)
        return f"{user}:{secret}:{self.mail_uid}:{self.mail_gid}::{home}::\n"

    def _write_passwd(self) -> None:
        """(Re)write the passwd-file (atomically: auth may read it at any time)."""
        if self._private is None:
            return
        path = self._private / "passwd"
        tmp = path.with_name("passwd.tmp")
        tmp.write_text("".join(self._passwd_line(u, p) for u, p in self._users.items()))
        os.chmod(tmp, 0o644)  # read by the auth process (user dovecot)
        os.replace(tmp, path)

    @staticmethod
    def _check_user(name: str, password: str) -> None:
        if not _USER_RE.fullmatch(name):
            raise ValueError(f"bad user name {name!r}")
        if not isinstance(password, str):
            raise TypeError("password must be a str")

    def add_user(self, name: str, password: str, timeout: float = START_TIMEOUT) -> None:
        """Add a user or change a password; while running, returns once it works.

        Dovecot's passwd-file driver re-reads the file when its mtime or size
        changed, but stats it at most once a second per auth process, so a change
        could take a second to show.  Instead we SIGHUP the master (a reload
        replaces the auth process), wait for the old auth process to exit and log
        in with the new credentials to verify.
        """
        self._check_user(name, password)
        with self._lock:
            self._users[name] = password
            self._write_passwd()
            if not self.running:
                return
            assert self._proc is not None
            old_auth = [pid for pid, title in self._processes() if title.endswith("/auth")]
            self._proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + timeout
            while any(_alive(pid) for pid in old_auth) and time.monotonic() < deadline:
                time.sleep(0.002)
            while not self.check_login(name, password):
                if time.monotonic() > deadline or not self.running:
                    raise DovecotError(
                        f"user {name!r} cannot log in after add_user; log {self.log_path}:\n"
                        f"{_tail(self._log_since(0))}"
                    )
                time.sleep(0.02)

    def _processes(self) -> list[tuple[int, str]]:
        """(pid, process title) of the instance's live processes."""
        if self._proc is None:
            return []
        result = []
        for pid in _group_members(self._proc.pid):
            with contextlib.suppress(OSError):
                title = Path(f"/proc/{pid}/cmdline").read_bytes()
                result.append((pid, title.replace(b"\0", b" ").decode(errors="replace").strip()))
        return result

    def check_login(self, user: str, password: str) -> bool:
        """Whether AUTHENTICATE PLAIN with these credentials succeeds (plain port)."""
        token = b64encode(b"\0" + user.encode() + b"\0" + password.encode())
        try:
            with socket.create_connection((self.host, self.port), timeout=5) as s:
                reader = s.makefile("rb")
                if not reader.readline().startswith(b"* OK"):
                    return False
                s.sendall(b"a AUTHENTICATE PLAIN " + token + b"\r\n")
                while True:
                    line = reader.readline()
                    if not line:
                        return False
                    if line.startswith(b"a "):
                        ok = line.startswith(b"a OK")
                        break
                with contextlib.suppress(OSError):
                    s.sendall(b"b LOGOUT\r\n")
                return ok
        except OSError:
            return False

    @property
    def _addresses(self) -> tuple[str, ...]:
        return (self.host, *self.listen_addresses)

    def _write_config(self) -> None:
        """dovecot.conf as a list of lines (long: it is the whole configuration file)."""
        assert self._private is not None
        private = self._private
        maildir = f"maildir:{(self._mail_dir or private) / 'mail'}/%u/Maildir"
        if self.layout == "fs":
            maildir += ":LAYOUT=fs"
        ssl_dir = self.base_dir / "ssl"
        lines = [
            "# Generated by yippiemove.testing.dovecot; rewritten on every start.",
            "protocols = imap",
            # loopback (and listen_addresses); the two listeners below are the only TCP ports
            f"listen = {', '.join(self._addresses)}",
            f"base_dir = {private / 'run'}",
            f"state_dir = {private / 'state'}",
            f"instance_name = yippiemove-{private.name}",
            f"log_path = {self.log_path}",
            'log_timestamp = "%Y-%m-%d %H:%M:%S "',
            "auth_verbose = yes",
            f"default_login_user = {self._login_user}",
            f"default_internal_user = {self._internal_user}",
            f"default_internal_group = {self._internal_group}",
            # mail processes run as mail_uid; Dovecot's default first_valid_uid is 500
            f"first_valid_uid = {self.mail_uid}",
            f"last_valid_uid = {self.mail_uid}",
            f"first_valid_gid = {self.mail_gid}",
            "ssl = yes",
            f"ssl_cert = <{ssl_dir / 'server.pem'}",
            f"ssl_key = <{ssl_dir / 'server.key'}",
            # tests log in over plain loopback too
            "disable_plaintext_auth = no",
            "auth_mechanisms = plain login"
            + (" oauthbearer xoauth2" if self.oauth2_introspection_url else ""),
            # no cached answers: a token refused by introspection is refused at once
            "auth_cache_size = 0",
            # no 2 s sleep after a failed login (default auth_failure_delay = 2 secs);
            # 2.3 still answers failures from a queue checked every 0.5 s
            "auth_failure_delay = 0",
            # Failed logins from one IP are delayed 2, 4, 8.. 15 s by the anvil
            # "auth penalty"; mode 0 drops its socket, which turns it off.
            "service anvil {",
            "  unix_listener anvil-auth-penalty {",
            "    mode = 0",
            "  }",
            "}",
            "passdb {",
            "  driver = passwd-file",
            # with OAuth2: passwords for PLAIN/LOGIN only, tokens go to the oauth2 passdb
            *(["  mechanisms = plain login"] if self.oauth2_introspection_url else []),
            f"  args = scheme=PLAIN {private / 'passwd'}",
            "}",
            *self._oauth2_passdb(),
            "userdb {",
            "  driver = passwd-file",
            f"  args = {private / 'passwd'}",
            "}",
            f"mail_location = {maildir}",
            "namespace inbox {",
            "  inbox = yes",
            f'  separator = "{self.separator}"',
            f'  prefix = "{self.prefix}"',
            *_special_use_config(self.special_use),
            "}",
            # throwaway data: never wait for the disk
            "mail_fsync = never",
            "protocol imap {",
            # default 10 parallel sessions per user and IP is too few for a mover
            "  mail_max_userip_connections = 1000",
            "}",
            "service imap-login {",
            # one login process forked at start-up: the first greeting comes sooner
            "  process_min_avail = 1",
            "  inet_listener imap {",
            f"    address = {' '.join(self._addresses)}",
            f"    port = {self._port}",
            "  }",
            "  inet_listener imaps {",
            f"    address = {' '.join(self._addresses)}",
            f"    port = {self._tls_port}",
            "    ssl = yes",
            "  }",
            "}",
        ]
        if not self._root:
            # chroot needs root; auth-worker defaults to user = root
            lines += [
                "service imap-login {\n  chroot =\n}",
                "service anvil {\n  chroot =\n}",
                "service ipc {\n  chroot =\n}",
                "service imap-urlauth-login {\n  chroot =\n}",
                "service old-stats {\n  chroot =\n}",
                "service auth-worker {\n  user = $default_internal_user\n}",
            ]
        if self.max_message_size is not None:
            # Dovecot 2.3 has no plain size limit for APPEND; the quota plugin's
            # quota_max_mail_size (2.2.29+) is one: APPEND answers NO [LIMIT].
            # The "count" backend with quota_vsizes and no quota_rule: no quota.
            lines += [
                "mail_plugins = $mail_plugins quota",
                "plugin {",
                "  quota = count:User quota",
                "  quota_vsizes = yes",
                f"  quota_max_mail_size = {self.max_message_size}",
                "}",
            ]
        if self.change_log:
            lines += [
                "mail_plugins = $mail_plugins notify mail_log",
                "plugin {",
                "  mail_log_events = delete undelete expunge copy save flag_change "
                "mailbox_create mailbox_delete mailbox_rename",
                "  mail_log_fields = uid box msgid flags",
                "}",
            ]
        if self.extra_config:
            lines.append(self.extra_config)
        self.config_path.write_text("\n".join(lines) + "\n")

    def _oauth2_passdb(self) -> list[str]:
        """The ``oauth2`` passdb blocks and their settings files (issue 16)."""
        if self.oauth2_introspection_url is None:
            return []
        assert self._private is not None
        # user tokens: the token's email is the login name (both lower-cased: %Lu)
        kinds = [("oauth2.conf.ext", ["username_attribute = email"])]
        if self.oauth2_app_tokens:
            # application tokens: the domain of app_user is the login name's
            kinds.append(
                ("oauth2-app.conf.ext", ["username_attribute = app_user", "username_format = %Ld"])
            )
        lines: list[str] = []
        for name, settings in kinds:
            path = self._private / name
            path.write_text(
                "\n".join(
                    [
                        "introspection_mode = post",
                        f"introspection_url = {self.oauth2_introspection_url}",
                        "force_introspection = yes",
                        *settings,
                        "active_attribute = active",
                        "active_value = true",
                        "timeout_msecs = 10000",
                    ]
                )
                + "\n"
            )
            os.chmod(path, 0o600)  # holds the introspection credentials
            self._chown(path)  # read by the auth process
            lines += [
                "passdb {",
                "  driver = oauth2",
                "  mechanisms = xoauth2 oauthbearer",
                f"  args = {path}",
                "}",
            ]
        return lines

    def _chown(self, path: Path | int) -> None:
        if self._root:
            if isinstance(path, int):
                os.fchown(path, self.mail_uid, self.mail_gid)
            else:
                os.lchown(path, self.mail_uid, self.mail_gid)

    # ----------------------------------------------------------------- doveadm

    def doveadm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``doveadm -c OURCONF ARGS`` (e.g. ``"mailbox", "list", "-u", "src"``)."""
        if not self.running:
            raise DovecotError("Dovecot server is not running")
        doveadm = _which("doveadm")
        if doveadm is None:
            raise DovecotNotInstalledError(f"doveadm not found: {INSTALL_HINT}")
        return subprocess.run(
            [doveadm, "-c", str(self.config_path), *args],
            capture_output=True,
            text=True,
            check=check,
        )

    # ----------------------------------------------------------------- maildir loader

    def folder_path(self, user: str, folder: str) -> Path:
        """Directory of an IMAP folder name (as clients see it) in the user's Maildir."""
        root = self.maildir(user)
        if folder.upper() == "INBOX":
            return root
        if self.prefix:
            if not folder.startswith(self.prefix):
                raise ValueError(f"folder {folder!r} is outside namespace {self.prefix!r}")
            folder = folder[len(self.prefix) :]
        parts = folder.split(self.separator)
        if parts[0].upper() == "INBOX":
            parts[0] = "INBOX"
        disk_sep = "/" if self.layout == "fs" else "."
        for part in parts:
            if part in ("", ".", "..") or "/" in part or disk_sep in part or "\0" in part:
                raise ValueError(f"folder name {folder!r} cannot be stored in this layout")
        if parts[0].startswith("~"):
            raise ValueError(f"folder name {folder!r} begins with '~'")
        encoded = [_mutf7(p) for p in parts]
        if self.layout == "fs":
            if {"cur", "new", "tmp"} & set(encoded):
                raise ValueError(f"folder name {folder!r} contains a reserved name")
            return root.joinpath(*encoded)
        return root / ("." + ".".join(encoded))

    def _ensure_dir(self, path: Path) -> bool:
        """mkdir with mail ownership; True if it was created."""
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            return False
        self._chown(path)
        return True

    def _ensure_folder(self, user: str, folder: str) -> Path:
        """Create the user's Maildir and the folder (cur/new/tmp), subscribed."""
        path = self.folder_path(user, folder)
        root = self.maildir(user)
        if not root.parent.parent.exists():  # base_dir/mail, before the first start
            root.parent.parent.parent.mkdir(parents=True, exist_ok=True)
            self._ensure_dir(root.parent.parent)
        for d in (root.parent, root, root / "cur", root / "new", root / "tmp"):
            self._ensure_dir(d)
        if path == root:
            return path
        created = False
        for d in reversed(path.relative_to(root).parents):
            if d != Path("."):
                self._ensure_dir(root / d)  # fs layout parents: \Noselect
        created = self._ensure_dir(path)
        for sub in ("cur", "new", "tmp"):
            self._ensure_dir(path / sub)
        if self.layout == "maildir++" and not (path / "maildirfolder").exists():
            fd = os.open(path / "maildirfolder", os.O_WRONLY | os.O_CREAT, 0o600)
            self._chown(fd)
            os.close(fd)
        if created:
            self._subscribe(root, path)
        return path

    def _subscribe(self, root: Path, path: Path) -> None:
        """Add the folder to Maildir/subscriptions, in Dovecot's format version 2."""
        rel = path.relative_to(root)
        parts = list(rel.parts) if self.layout == "fs" else rel.name[1:].split(".")
        subs = root / _SUBSCRIPTIONS_FILE
        header = "V\t2\n\n"
        try:
            old = subs.read_text()
        except FileNotFoundError:
            old = header
        if old.startswith(header):
            entry = "\t".join(_tabescape(p) for p in parts)
        else:  # version 1: names joined with the storage's separator
            entry = ("/" if self.layout == "fs" else ".").join(parts)
        if entry in old[len(header) :].split("\n") if old.startswith(header) else old.split("\n"):
            return
        if old and not old.endswith("\n"):
            old += "\n"
        self._dotlock_write(subs, old + entry + "\n")

    def _dotlock_write(self, path: Path, text: str) -> None:
        """Replace a file the way Dovecot's file_dotlock does: write PATH.lock, rename."""
        lock = path.with_name(path.name + ".lock")
        deadline = time.monotonic() + 10
        while True:
            try:
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                break
            except FileExistsError:
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - lock.stat().st_mtime > 30:  # stale, as Dovecot
                        lock.unlink()
                        continue
                if time.monotonic() > deadline:
                    raise DovecotError(f"{lock} stays locked") from None
                time.sleep(0.01)
        try:
            os.write(fd, text.encode())
            self._chown(fd)
        finally:
            os.close(fd)
        os.replace(lock, path)

    def _keywords(self, folder_dir: Path) -> dict[str, int]:
        """Parse ``dovecot-keywords``: lines ``INDEX NAME``, letter = 'a' + INDEX."""
        result: dict[str, int] = {}
        try:
            text = (folder_dir / _KEYWORDS_FILE).read_text()
        except FileNotFoundError:
            return result
        for line in text.splitlines():
            idx, _, name = line.partition(" ")
            if idx.isdigit() and name:
                result[name] = int(idx)
        return result

    def deliver(
        self,
        user: str,
        folder: str,
        raw: bytes,
        flags: Iterable[str] = (),
        internaldate: datetime | None = None,
    ) -> Path:
        """Write one message straight into the user's Maildir; see :meth:`deliver_many`."""
        if isinstance(flags, str):
            raise TypeError("flags must be an iterable of str, not a str")
        return self.deliver_many(user, folder, [MaildirMessage(raw, tuple(flags), internaldate)])[0]

    def deliver_many(
        self, user: str, folder: str, items: Iterable[MaildirMessage | bytes]
    ) -> list[Path]:
        """Write messages straight into ``folder`` of ``user``'s Maildir, in order.

        Much faster than APPEND, for loading benchmark data.  Creates the folder
        (layout as configured, subscribed) and the user's Maildir if needed.  Raw
        bytes are written as given; system flags become maildir info letters,
        keywords letters a-z listed in the folder's ``dovecot-keywords`` (at most 26
        per folder), INTERNALDATE the file's mtime.  Dovecot gives the messages
        increasing UIDs in the order given.  Works while the server runs: open
        sessions see new messages on their next sync, but a new folder only in the
        LIST of sessions started afterwards (Dovecot's mailbox list index); do not
        let clients add keywords to the same folder meanwhile.  Folder names are
        Unicode (stored as modified UTF-7) and include the namespace prefix.
        Returns the files' paths; if an item is bad (ValueError, TypeError), the
        ones before it stay delivered.
        """
        if user not in self._users:
            raise ValueError(f"unknown user {user!r}: add_user() first")
        with self._lock:
            folder_dir = self._ensure_folder(user, folder)
            cur_dir = folder_dir / "cur"
            keywords = self._keywords(folder_dir)
            tmp_fd = os.open(folder_dir / "tmp", os.O_RDONLY | os.O_DIRECTORY)
            cur_fd = os.open(cur_dir, os.O_RDONLY | os.O_DIRECTORY)
            result = []
            try:
                for item in items:
                    msg = item if isinstance(item, MaildirMessage) else MaildirMessage(item)
                    letters, new_keywords = self._info_letters(msg.flags, keywords)
                    if new_keywords:
                        # before any file name uses the new letters
                        text = "".join(
                            f"{i} {k}\n" for k, i in sorted(keywords.items(), key=lambda kv: kv[1])
                        )
                        self._dotlock_write(folder_dir / _KEYWORDS_FILE, text)
                    name = self._write_message(msg, tmp_fd)
                    # maildir delivery: write in tmp/, rename (keeps the mtime) to cur/
                    final = f"{name}:2,{letters}"
                    os.rename(name, final, src_dir_fd=tmp_fd, dst_dir_fd=cur_fd)
                    result.append(cur_dir / final)
            finally:
                os.close(tmp_fd)
                os.close(cur_fd)
            return result

    @staticmethod
    def _info_letters(flags: Iterable[str], keywords: dict[str, int]) -> tuple[str, bool]:
        """Maildir info letters for flags, in ASCII order; adds new keywords."""
        letters = set()
        added = False
        for flag in _iter_flags(flags):
            if flag.startswith("\\"):
                letter = _FLAG_LETTERS.get(flag.lower())
                if letter is None:
                    raise ValueError(f"cannot store system flag {flag!r}")
                letters.add(letter)
                continue
            if flag not in keywords:
                if len(keywords) >= _MAX_KEYWORDS:
                    raise ValueError(
                        f"Dovecot maildir holds at most {_MAX_KEYWORDS} keywords per folder"
                    )
                used = set(keywords.values())
                keywords[flag] = next(i for i in range(_MAX_KEYWORDS) if i not in used)
                added = True
            letters.add(chr(ord("a") + keywords[flag]))
        return "".join(sorted(letters)), added

    def _write_message(self, msg: MaildirMessage, tmp_fd: int) -> str:
        """Write one message into tmp/ (opened as tmp_fd); returns its file name."""
        if not isinstance(msg.raw, bytes | bytearray | memoryview):
            raise TypeError("raw message must be bytes")
        raw = bytes(msg.raw)
        name = f"{_next_basename()},S={len(raw)},W={_vsize(raw)}"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=tmp_fd)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            self._chown(fd)
            if msg.internaldate is not None:
                stamp = msg.internaldate.timestamp()
                os.utime(fd, (stamp, stamp))
        except BaseException:
            os.close(fd)
            os.unlink(name, dir_fd=tmp_fd)
            raise
        os.close(fd)
        return name


def _iter_flags(flags: Iterable[str]) -> Iterator[str]:
    """Validate flags: ``\\Word`` system flags or keywords made of IMAP atom chars."""
    if isinstance(flags, str):
        raise TypeError("flags must be an iterable of str, not a str")
    for flag in flags:
        name = flag[1:] if flag.startswith("\\") else flag
        if not name or any(c in _ATOM_SPECIALS or not 0x20 < ord(c) < 0x7F for c in name):
            raise ValueError(f"bad flag or keyword {flag!r}")
        yield flag


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
