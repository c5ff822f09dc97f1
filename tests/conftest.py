"""Shared fixtures: throwaway real Dovecot and Cyrus IMAP servers (yippiemove.testing)."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.doubles.cyrus import INSTALL_HINT as CYRUS_INSTALL_HINT
from tests.doubles.cyrus import CyrusServer, cyrus_available
from tests.doubles.mailutils import INSTALL_HINT as IMAP4D_INSTALL_HINT
from tests.doubles.mailutils import Imap4dServer, imap4d_available

# Real PostgreSQL and Redis servers (tests/infra/): `postgres_server`, `postgres`,
# `redis_server`, and YIPPIEMOVE_TEST_DATABASE=postgresql (docs/testing.md).
# The test OAuth2 provider and a Dovecot that accepts its tokens (issue 16):
# `oauth_server`, `dovecot_oauth`, `gmail_oauth`.
from tests.doubles.oauth_fixtures import (  # noqa: F401  (fixtures, found by name)
    dovecot_oauth,
    gmail_oauth,
    oauth_server,
)
from tests.infra.fixtures import (  # noqa: F401  (fixtures, found by name)
    postgres,
    postgres_server,
    redis_server,
    test_database_env,
)
from tests.source_guard import guard_sources
from yippiemove.testing.dovecot import INSTALL_HINT, DovecotServer, dovecot_available

# The test servers run on this machine, which the service's egress policy refuses by
# default (policy/egress.py): every service the tests start (in this process or as a
# `yippiemove serve` child) allows loopback, as a self-hoster would.  The egress tests
# (tests/web/test_egress.py) start theirs without it.
os.environ.setdefault("YIPPIEMOVE_EGRESS_ALLOW", "127.0.0.0/8")

#: The argon2id parameters of customer passwords in the test process: the cheapest
#: argon2-cffi takes (about 1 ms a hash instead of 0.1-1 s on a busy 2-core machine).
#: Hundreds of tests create users and sign in; none of them tests the hash's cost, and the
#: hashes stay argon2id (verified the same way; a `serve` child keeps the real parameters
#: and rehashes such a hash at the first sign-in).  The production parameters are checked
#: in tests/service/test_secrets.py.
TEST_PASSWORD_HASHER = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}


@pytest.fixture(autouse=True, scope="session")
def _cheap_password_hashes() -> Iterator[None]:
    from argon2 import PasswordHasher

    from yippiemove.service import secrets

    real = secrets._hasher
    secrets._hasher = PasswordHasher(**TEST_PASSWORD_HASHER)
    try:
        yield
    finally:
        secrets._hasher = real


@pytest.fixture(scope="session")
def dovecot_installed() -> None:
    """Fail (never skip) every test that needs Dovecot when it is not installed."""
    if not dovecot_available():
        pytest.fail(f"these tests need a real Dovecot IMAP server: {INSTALL_HINT}", pytrace=False)


#: What Dovecot's mail_log plugin says when an IMAP client changes a mailbox
#: (DovecotServer(change_log=True)).  "Mailbox created: INBOX" is left out: Dovecot makes
#: a missing INBOX itself when a client opens it.
_CHANGE = re.compile(
    r"imap\((?P<user>[^)]+)\)<[^>]*><[^>]*>: Info: "
    r"(?P<what>(?:save|copy|expunge|delete|undelete|flag_change):.*"
    r"|Mailbox (?:created: (?!INBOX$).*|deleted: .*|renamed: .*))$"
)


def source_changes(server: DovecotServer, *, wait: float = 0.0) -> list[str]:
    """Changes made over IMAP to a source account (a user named ``src...``) of a server
    started with ``change_log=True``: the source is read-only, so any is a bug.

    Dovecot's log process writes what the imap processes tell it a moment later; ``wait``
    (seconds) polls that long for a first change to appear (a test that makes one)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            text = server.log_path.read_text(errors="replace")
        except OSError:
            text = ""
        out = []
        for line in text.splitlines():
            m = _CHANGE.search(line)
            if m and m["user"].startswith("src"):
                out.append(f"{m['user']}: {m['what']}")
        if out or time.monotonic() >= deadline:
            return out
        time.sleep(0.05)


def _guard_sources(request: pytest.FixtureRequest, servers: list[DovecotServer]) -> None:
    """The source-untouched guard of every test that runs a Dovecot: a change to a source
    account over IMAP fails the test, unless it is marked ``source_writes`` (the test
    itself changes the source, e.g. deletes a folder during a transfer)."""
    if request.node.get_closest_marker("source_writes") is not None:
        return
    changes = [c for server in servers for c in source_changes(server)]
    if changes:
        pytest.fail(
            "a source mailbox was changed over IMAP (the source must stay untouched):\n  "
            + "\n  ".join(changes[:20]),
            pytrace=False,
        )


@pytest.fixture
def dovecot_factory(
    dovecot_installed: None, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., DovecotServer]]:
    """Start extra servers: ``dovecot_factory(users={...}, max_message_size=...)``.

    Each gets its own directory under tmp_path; all are stopped at teardown, and the
    source-untouched guard checks them (see :func:`_guard_sources`).
    """
    servers: list[DovecotServer] = []

    def make(**kwargs: Any) -> DovecotServer:
        kwargs.setdefault("change_log", True)
        server = DovecotServer(tmp_path / f"dovecot-{len(servers)}", **kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in reversed(servers):
        server.stop()
    _guard_sources(request, servers)


@pytest.fixture
def dovecot(
    dovecot_installed: None, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[DovecotServer]:
    """A running Dovecot, separator "/" (maildir LAYOUT=fs), users src and dst; the
    source-untouched guard checks it at teardown."""
    server = DovecotServer(
        tmp_path / "dovecot",
        separator="/",
        users={"src": "srcpass", "dst": "dstpass"},
        change_log=True,
    )
    with server:
        yield server
    _guard_sources(request, [server])


@pytest.fixture
def dovecot_dot(dovecot_installed: None, tmp_path: Path) -> Iterator[DovecotServer]:
    """A second running Dovecot, separator "." and prefix "" (Maildir++), user dst."""
    server = DovecotServer(
        tmp_path / "dovecot-dot", separator=".", prefix="", users={"dst": "dstpass"}
    )
    with server:
        yield server


@pytest.fixture(scope="session")
def cyrus_installed() -> None:
    """Cyrus is installed by scripts/test; without it: a failure in CI, else a skip."""
    if not cyrus_available():
        import os

        msg = f"these tests need a real Cyrus IMAP server: {CYRUS_INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


#: The methods a test loads a Cyrus account with (the guard's "before" follows them).
CYRUS_LOADERS = ("add_user", "create_folder", "deliver_many", "session")


def _guard_cyrus(request: pytest.FixtureRequest, server: CyrusServer) -> Any:
    return guard_sources(
        request,
        server,
        users=lambda: list(server._users),
        loaders=CYRUS_LOADERS,
        running=lambda: server.running,
        fresh=server.fresh_folders,
    )


@pytest.fixture
def cyrus(
    cyrus_installed: None, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[CyrusServer]:
    """A running Cyrus IMAP: namespace "INBOX." with separator ".", users src and dst,
    each with INBOX.Sent Items, INBOX.Drafts, INBOX.Deleted Items and INBOX.Spam marked
    \\Sent, \\Drafts, \\Trash and \\Junk (SPECIAL-USE).  The source-untouched guard
    (tests/source_guard.py) checks its ``src...`` accounts at teardown."""
    server = CyrusServer(tmp_path / "cyrus", users={"src": "srcpass", "dst": "dstpass"})
    with server, _guard_cyrus(request, server):
        yield server


@pytest.fixture
def cyrus_factory(
    cyrus_installed: None, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., CyrusServer]]:
    """Start Cyrus servers with options: ``cyrus_factory(eight_bit_headers="reject")``.

    Users src/srcpass and dst/dstpass unless ``users`` is given; stopped at teardown,
    after the source-untouched guard checked them.
    """
    servers: list[CyrusServer] = []
    with contextlib.ExitStack() as guards:

        def make(**kwargs: Any) -> CyrusServer:
            kwargs.setdefault("users", {"src": "srcpass", "dst": "dstpass"})
            server = CyrusServer(tmp_path / f"cyrus-{len(servers)}", **kwargs)
            servers.append(server)
            server.start()
            guards.enter_context(_guard_cyrus(request, server))
            return server

        try:
            yield make
        finally:
            guards.close()
            for server in reversed(servers):
                server.stop()


@pytest.fixture(scope="session")
def imap4d_installed() -> None:
    """GNU Mailutils imap4d is installed by scripts/test; without it: a failure in CI,
    else a skip."""
    if not imap4d_available():
        import os

        msg = f"these tests need GNU Mailutils imap4d (and openssl): {IMAP4D_INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


@pytest.fixture
def imap4d(
    imap4d_installed: None, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Imap4dServer]:
    """A running GNU Mailutils imap4d (maildir, namespace "" with "/"), users src and dst
    (passwords srcpass, dstpass; log in as ``imap4d.login("src")``, i.e. src@yippiemove.test);
    the source-untouched guard (tests/source_guard.py) checks its ``src...`` accounts."""
    server = Imap4dServer(tmp_path / "imap4d", users={"src": "srcpass", "dst": "dstpass"})
    with (
        server,
        guard_sources(
            request,
            server,
            users=lambda: list(server._users),
            loaders=("add_user", "create_folder", "deliver_many", "session"),
            running=lambda: server.running,
        ),
    ):
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


@pytest.fixture
def gmail(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A running Gmail IMAP double (tests.doubles.gmail.GmailServer), plain text on
    127.0.0.1, users src@gmail.test/srcpass and dst@gmail.test/dstpass (in an account URL
    write the "@" of the user name as %40).  Fails the test if the double hit an internal
    error.  The source-untouched guard (tests/source_guard.py) checks its ``src...``
    accounts at teardown."""
    yield from run_gmail(request)


def run_gmail(request: pytest.FixtureRequest, **kw: Any) -> Iterator[Any]:
    """The ``gmail`` fixture's body: a Gmail double (``kw`` to GmailServer) under the
    source guard, its internal errors failing the test."""
    from tests.doubles.gmail import GmailServer

    server = GmailServer(users={"src@gmail.test": "srcpass", "dst@gmail.test": "dstpass"}, **kw)
    with (
        server,
        guard_sources(
            request,
            server,
            users=lambda: list(server._accounts),
            loaders=("add_user", "add_message", "create_label"),
            running=lambda: server.running,
        ),
    ):
        yield server
    assert not server.internal_errors, server.internal_errors


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--campaign-long``: the long campaigns (tests/transfer/test_fault_campaign.py,
    tests/transfer/test_kill_campaign.py, tests/jobs/test_kill_campaign_service.py)."""
    parser.addoption(
        "--campaign-long",
        action="store_true",
        default=False,
        help="run the long campaigns: 200 transfers through the fault proxy "
        "($YIPPIEMOVE_CAMPAIGN_TRANSFERS overrides the number, $YIPPIEMOVE_CAMPAIGN_SEED "
        "the seed), 100 CLI and 30 service trials of kill -9 ($YIPPIEMOVE_KILL_TRIALS, "
        "$YIPPIEMOVE_KILL_SEED); see docs/faults.md; and 50 schemathesis examples per "
        "operation instead of 12 (tests/web/test_api_schemathesis.py)",
    )

    parser.addoption(
        "--matrix-full",
        action="store_true",
        default=False,
        help="tests/transfer/test_matrix.py: every server kind as source and as destination "
        "(by default: every kind into Dovecot, Dovecot into every kind, Cyrus <-> imap4d); "
        "see docs/testing.md, 'The cross-server matrix'",
    )


#: Tests that keep a core busy for tens of seconds or time a link (kill campaigns
#: calibrate one; fleets run several worker hosts): under pytest-xdist (scripts/test runs
#: ``-n auto --dist loadgroup``) they share one group, so two of them never run at once.
HEAVY_GROUP = "heavy"
_HEAVY_FILES = (
    "tests/jobs/test_fleet.py",
    "tests/jobs/test_fleet_drain.py",
    "tests/jobs/test_fleet_fence.py",
    "tests/test_fleet_harness.py",
    "tests/bench/test_fleet_smoke.py",
    "tests/bench/test_many_jobs.py",
)
_CAMPAIGNS = ("test_fault_campaign", "test_kill_campaign", "test_kill_campaign_service")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Heavy tests into one xdist group; the long campaigns run for many minutes: lift
    the per-test timeout for them."""
    long = config.getoption("--campaign-long")
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        if path in _HEAVY_FILES or item.name in _CAMPAIGNS or item.get_closest_marker("fleet"):
            item.add_marker(pytest.mark.xdist_group(HEAVY_GROUP))
        if long and item.name in _CAMPAIGNS:
            item.add_marker(pytest.mark.timeout(4 * 3600))


@pytest.fixture(autouse=True)
def _job_dirs_reachable(request: pytest.FixtureRequest) -> None:
    """As root, job processes drop to a user id of their own (jobs/privilege.py) and open
    their state by absolute path: the way to a test's data directory must be searchable
    by other users (pytest makes its temporary directories 0700).  Search only (0711):
    the service seals its own data directory."""
    import os
    import stat

    if os.geteuid() != 0 or "tmp_path" not in request.fixturenames:
        return
    tmp: Path = request.getfixturevalue("tmp_path")
    for d in (tmp, *tmp.parents):
        mode = d.stat().st_mode
        if not mode & stat.S_IXOTH:
            d.chmod(stat.S_IMODE(mode) | 0o011)
