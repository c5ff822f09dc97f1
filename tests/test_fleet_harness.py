"""tests/fleet.py itself: hosts reach each other and the bridge, a cut link partitions,
kill_all empties a namespace, close() and the sweep of a killed run's leftovers remove
everything, Dovecot listens on the bridge (DovecotServer(listen_addresses=...))."""

from __future__ import annotations

import imaplib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fleet import PREFIX, Fleet, fleet_unavailable, sweep_leftovers
from tests.fleet_fixtures import _need_fleet
from yippiemove.testing.dovecot import DovecotServer

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(120)]

SERVER = (
    "import socket, sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen()\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'hello'); c.close()\n"
)


@pytest.fixture(autouse=True)
def _root() -> None:
    _need_fleet()


def _names() -> str:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    spaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return links + spaces


def _connect(netns: str | None, address: str, port: int) -> str:
    code = (
        "import socket, sys\n"
        "try:\n"
        f"    s = socket.create_connection(({address!r}, {port}), timeout=2)\n"
        "    print(s.recv(5).decode())\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    prefix = ["ip", "netns", "exec", netns] if netns else []
    done = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip()


def _listen(fleet: Fleet, host_name: str, port: int) -> None:
    host = fleet.host(host_name)
    host.run([sys.executable, "-c", SERVER, host.address, str(port)])
    for _ in range(200):
        if _connect(None, host.address, port) == "hello":
            return
        time.sleep(0.05)
    raise AssertionError(host.log_tail())


def test_hosts_reach_each_other_and_a_cut_partitions() -> None:
    with Fleet() as fleet:
        a, b = fleet.add_host("a"), fleet.add_host("b")
        assert a.address != b.address and a.address.startswith("10.")
        _listen(fleet, "b", 8000)
        assert _connect(a.netns, b.address, 8000) == "hello"
        b.cut()
        assert _connect(a.netns, b.address, 8000) != "hello"
        assert b.pids(), "a cut host's processes live on"
        b.heal()
        assert _connect(a.netns, b.address, 8000) == "hello"
        b.kill_all()
        assert b.pids() == []
        name = subprocess.run(
            ["ip", "netns", "exec", a.netns, "unshare", "--uts", "--", "sh", "-c",
             f'hostname "{a.hostname}" && hostname'],
            capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        assert name == a.hostname
    assert fleet.bridge not in _names() and a.netns not in _names()


def test_close_after_a_failure_and_leftovers_of_a_killed_run() -> None:
    with pytest.raises(RuntimeError, match="boom"), Fleet() as fleet:
        fleet.add_host("x")
        raise RuntimeError("boom")
    assert fleet.bridge not in _names()
    # A run killed with SIGKILL leaves its names; the pid in them is dead.
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = f"{PREFIX}{dead.pid}n0-left"
    subprocess.run(["ip", "netns", "add", leftover], check=True)
    try:
        assert leftover in sweep_leftovers()
    finally:
        subprocess.run(["ip", "netns", "del", leftover], capture_output=True)
    assert leftover not in _names()


def test_dovecot_listens_on_the_bridge_too(tmp_path: Path) -> None:
    with Fleet() as fleet:
        host = fleet.add_host("mail-user")
        server = DovecotServer(
            tmp_path / "dovecot", users={"u": "pw"}, listen_addresses=[fleet.address]
        )
        with server:
            imap = imaplib.IMAP4(server.host, server.port)  # loopback as before
            imap.login("u", "pw")
            imap.logout()
            assert _connect(host.netns, fleet.address, server.port).startswith("* OK")
            with socket.create_connection((fleet.address, server.port), timeout=5) as s:
                assert s.recv(4) == b"* OK"


def test_not_root_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "root" in (fleet_unavailable() or "")
    with pytest.raises(RuntimeError, match="needs root"):
        Fleet()
