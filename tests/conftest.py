"""Shared fixtures: throwaway real Dovecot IMAP servers (see yippiemove.testing.dovecot)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from yippiemove.testing.dovecot import INSTALL_HINT, DovecotServer, dovecot_available


@pytest.fixture(scope="session")
def dovecot_installed() -> None:
    """Fail (never skip) every test that needs Dovecot when it is not installed."""
    if not dovecot_available():
        pytest.fail(f"these tests need a real Dovecot IMAP server: {INSTALL_HINT}", pytrace=False)


@pytest.fixture
def dovecot_factory(
    dovecot_installed: None, tmp_path: Path
) -> Iterator[Callable[..., DovecotServer]]:
    """Start extra servers: ``dovecot_factory(users={...}, max_message_size=...)``.

    Each gets its own directory under tmp_path; all are stopped at teardown.
    """
    servers: list[DovecotServer] = []

    def make(**kwargs: Any) -> DovecotServer:
        server = DovecotServer(tmp_path / f"dovecot-{len(servers)}", **kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def dovecot(dovecot_installed: None, tmp_path: Path) -> Iterator[DovecotServer]:
    """A running Dovecot, separator "/" (maildir LAYOUT=fs), users src and dst."""
    server = DovecotServer(
        tmp_path / "dovecot", separator="/", users={"src": "srcpass", "dst": "dstpass"}
    )
    with server:
        yield server


@pytest.fixture
def dovecot_dot(dovecot_installed: None, tmp_path: Path) -> Iterator[DovecotServer]:
    """A second running Dovecot, separator "." and prefix "" (Maildir++), user dst."""
    server = DovecotServer(
        tmp_path / "dovecot-dot", separator=".", prefix="", users={"dst": "dstpass"}
    )
    with server:
        yield server


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """``shared/corpus/real-world``: beside the checkout (CI) or from YIPPIEMOVE_CORPUS."""
    import os

    env = os.environ.get("YIPPIEMOVE_CORPUS")
    root = Path(__file__).resolve().parent.parent
    for cand in ([Path(env)] if env else []) + [
        root.parent / "shared" / "corpus" / "real-world",
        root / "shared" / "corpus" / "real-world",
    ]:
        if cand.is_dir():
            return cand
    pytest.fail(
        "the real-world corpus is missing: expected ../shared/corpus/real-world", pytrace=False
    )
