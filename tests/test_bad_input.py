"""Bad input at the command line (issue 6): every mistake gets one clear line that names
what is wrong, exit status 2, and changes nothing: the destination gets no folder and no
message, and no state file is left behind.

Complements tests/transfer/test_move.py::test_bad_inputs_exit_2_with_a_clear_message
(the messages themselves) and tests/transfer/test_mapping.py (rules and filters); the
inventory of what is checked where is in docs/testing.md.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import mailcheck
from tests.transfer.test_move import make_message

SRC_PW = "Src-Marker-Pa55-7f3a9c"
DST_PW = "Dst-Marker-Pa55-41be07"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(
    tmp: Path, source: str, dest: str, *extra: str, src_pw: str = SRC_PW
) -> subprocess.CompletedProcess[str]:
    (tmp / "s.pw").write_text(src_pw + "\n")
    (tmp / "d.pw").write_text(DST_PW + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIPPIEMOVE_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "yippiemove.cli",
            "move",
            "--source",
            source,
            "--dest",
            dest,
            "--source-password-file",
            str(tmp / "s.pw"),
            "--dest-password-file",
            str(tmp / "d.pw"),
            "--state",
            str(tmp / "state.sqlite"),
            "--retries",
            "0",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def assert_one_clear_line(r: subprocess.CompletedProcess[str], expect: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("yippiemove: error: "), r.stderr
    assert expect in lines[0], r.stderr
    out = r.stdout + r.stderr
    assert "Traceback" not in out
    assert SRC_PW not in out and DST_PW not in out


@pytest.fixture
def server(dovecot_factory):
    """Dovecot with marker passwords; the destination already holds one message."""
    s = dovecot_factory(users={"src": SRC_PW, "dst": DST_PW})
    s.deliver("src", "INBOX", make_message(1))
    s.deliver("src", "Archive", make_message(2))
    s.deliver("dst", "INBOX", make_message(3))
    return s


def dest_view(server) -> dict:
    return mailcheck.snapshot(server.port, "dst", DST_PW)


def nothing_left(tmp: Path) -> bool:
    return not any(tmp.glob("state.sqlite*"))


# ---------------------------------------------------------------- servers and accounts


@pytest.mark.parametrize(
    "case",
    [
        "unknown-host",
        "closed-port",
        "wrong-password",
        "imaps-to-a-plain-port",
        "self-signed-imaps",
        "self-signed-starttls",
        "no-such-folder",
        "no-such-folder-glob",
    ],
)
def test_each_mistake_is_one_line_and_changes_nothing(server, tmp_path, case):
    dst = f"imap://dst@127.0.0.1:{server.port}"
    src = f"imap://src@127.0.0.1:{server.port}"
    ca = ["--ca-file", str(server.ca_file)]
    extra: list[str] = []
    src_pw = SRC_PW
    port = free_port()
    expect = {
        "unknown-host": "unknown host 'no-such-host.invalid'",
        "closed-port": f"cannot connect to 127.0.0.1:{port}",
        "wrong-password": "127.0.0.1 refused the login for 'src'",
        "imaps-to-a-plain-port": f"127.0.0.1:{server.port}",
        "self-signed-imaps": "certificate verification failed",
        "self-signed-starttls": "certificate verification failed",
        "no-such-folder": "no source folder matches --folder 'Nope'",
        "no-such-folder-glob": "no source folder matches --folder 'Arch?x*'",
    }[case]
    if case == "unknown-host":
        src = "imap://src@no-such-host.invalid:143"
    elif case == "closed-port":
        src = f"imap://src@127.0.0.1:{port}"
    elif case == "wrong-password":
        src_pw = "Wrong-Marker-Pa55-0c9d"
    elif case == "imaps-to-a-plain-port":
        src = f"imaps://src@127.0.0.1:{server.port}"
    elif case == "self-signed-imaps":
        src = f"imaps://src@127.0.0.1:{server.tls_port}"
        ca = []  # TLS is verified by default: the test CA is not trusted
    elif case == "self-signed-starttls":
        ca = []  # imap:// upgrades with STARTTLS, verified the same way
    elif case == "no-such-folder":
        extra = ["--folder", "Nope"]
    elif case == "no-such-folder-glob":
        extra = ["--folder", "Arch?x*"]
    before = dest_view(server)
    r = cli(tmp_path, src, dst, *ca, *extra, src_pw=src_pw)
    assert_one_clear_line(r, expect)
    if case == "wrong-password":
        assert "Wrong-Marker-Pa55-0c9d" not in r.stdout + r.stderr
    if case == "imaps-to-a-plain-port":
        assert "TLS" in r.stderr
    assert dest_view(server) == before
    assert nothing_left(tmp_path), list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--since", "2024-13-40"], "--since"),
        (["--since", "2024-02-30"], "--since"),
        (["--before", "yesterday"], "--before"),
        (["--larger", "-5"], "--larger"),
        (["--smaller", "1.5.5M"], "--smaller"),
        (["--smaller", "12Q"], "--smaller"),
        (["--rename", "a"], "--rename"),
        (["--rename", "=x"], "--rename"),
        (["--rename-regex", "("], "--rename-regex"),
        (["--rename-regex", "(=x"], "--rename-regex"),
        (["--under", "a//b"], "--under"),
        (["--connections", "0"], "--connections"),
        (["--timeout", "-1"], "--timeout"),
        (["--source-preset", "no-such-provider"], "--source-preset"),
    ],
)
def test_invalid_options_are_refused_before_connecting(tmp_path, args, option):
    """Refused before any connection is tried: the accounts point at a closed port, and
    the error is about the option, not about the port."""
    port = free_port()
    r = cli(tmp_path, f"imap://a@127.0.0.1:{port}", f"imap://b@127.0.0.1:{port}", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    error = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and option in error[0], r.stderr
    assert "cannot connect" not in r.stderr and "Traceback" not in r.stderr
    assert nothing_left(tmp_path)


@pytest.mark.parametrize(
    ("url", "expect"),
    [
        ("imap://src@127.0.0.1:0", "port '0' is not a number 1-65535"),
        ("imap://src@127.0.0.1:99999", "port '99999'"),
        ("imap://src@127.0.0.1:x", "port 'x'"),
        ("imap://127.0.0.1:143", "has no user name"),
        ("imap://src:pw@127.0.0.1", "do not put the password in the URL"),
        ("pop3://src@127.0.0.1", "unknown scheme 'pop3'"),
        ("imap://src@/", "is not a valid host name"),
        ("imap://src@host/INBOX", "a path, query or fragment is not allowed"),
        ("imap://src@[::1", "unterminated IPv6 address"),
        ("src@unknown-provider.example", "no preset for unknown-provider.example"),
    ],
)
def test_malformed_account_urls_name_the_problem(tmp_path, url, expect):
    r = cli(tmp_path, url, "imap://b@127.0.0.1:143")
    assert_one_clear_line(r, expect)
    assert "--source" in r.stderr  # which of the two accounts
    assert nothing_left(tmp_path)


# ---------------------------------------------------------------- scripted servers


class Scripted:
    """A tiny IMAP server in a thread, for what no real server does on demand: a plain
    server without STARTTLS on a non-loopback address, answers that make no sense.
    Records every line it receives."""

    def __init__(self, host: str, answer: Callable[[bytes, bytes], bytes]) -> None:
        self.host = host
        self.answer = answer
        self.received: list[bytes] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handler(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN LITERAL+] scripted\r\n")
        while line := await r.readline():
            self.received.append(line)
            tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
            w.write(self.answer(tag, rest))
            await w.drain()

    async def _main(self) -> None:
        server = await asyncio.start_server(self._handler, self.host, 0)
        self.port = server.sockets[0].getsockname()[1]
        self._stop = self._loop.create_future()
        self._ready.set()
        async with server:
            await self._stop

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())

    def __enter__(self) -> Scripted:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(10)


def answers(**by_verb: bytes) -> Callable[[bytes, bytes], bytes]:
    """Untagged data per command verb, then a tagged OK; BYE for LOGOUT."""

    def answer(tag: bytes, rest: bytes) -> bytes:
        verb = rest.split(b" ", 1)[0].upper().decode("latin-1")
        extra = by_verb.get(verb, b"")
        if verb == "LOGOUT":
            extra = b"* BYE bye\r\n"
        return extra + tag + b" OK done\r\n"

    return answer


def outward_address() -> str:
    """An address of this machine that is not loopback (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            addr = s.getsockname()[0]
    except OSError:
        addr = ""
    if not addr or addr.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address")
    return addr


def test_plain_server_without_starttls_never_gets_the_password(server, tmp_path):
    """imap:// asks for STARTTLS; a server that does not offer it, not on loopback, is
    refused before LOGIN: the password never leaves (unless --allow-insecure-auth)."""
    host = outward_address()
    with Scripted(host, answers()) as plain:
        r = cli(
            tmp_path,
            f"imap://src@{host}:{plain.port}",
            f"imap://dst@127.0.0.1:{server.port}",
            "--ca-file",
            str(server.ca_file),
        )
    assert_one_clear_line(r, "--allow-insecure-auth")
    assert host in r.stderr
    seen = b"".join(plain.received)
    assert SRC_PW.encode() not in seen
    assert b"LOGIN" not in seen.upper() and b"AUTHENTICATE" not in seen.upper()
    assert nothing_left(tmp_path)


@pytest.mark.parametrize(
    "list_answer",
    [
        b'* LIST () "\xff" INBOX\r\n',  # a separator that is not a character
        b'* LIST () "//" INBOX\r\n',  # two of them
        b"* LIST () (x) INBOX\r\n",  # a list where a string belongs
    ],
)
def test_an_answer_that_makes_no_sense_is_one_line(server, tmp_path, list_answer):
    """A server whose LIST answer parses but cannot be right: the run stops with one line
    saying so (not a traceback), and nothing is changed."""
    before = dest_view(server)
    with Scripted("127.0.0.1", answers(LIST=list_answer)) as odd:
        r = cli(
            tmp_path,
            f"imap://src@127.0.0.1:{odd.port}",
            f"imap://dst@127.0.0.1:{server.port}",
            "--ca-file",
            str(server.ca_file),
        )
    assert_one_clear_line(r, "not valid IMAP")
    assert dest_view(server) == before
    assert nothing_left(tmp_path)
