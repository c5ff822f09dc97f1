"""More workers when the servers are far away (a slow round trip).

Each folder costs a few round trips that pipelining cannot hide (list both sides, the
last APPEND's answer, the verify), so on a WAN link the mover keeps more folders in
flight: ``Options.far_connections`` workers when a NOOP to the source takes
``Options.far_rtt`` or more.  Loopback is never far, so these tests move the threshold
instead of the servers (the benchmark measures the real thing through a latency proxy).
"""

from __future__ import annotations

import asyncio
import ssl

import pytest

from tests import mailcheck
from tests.transfer.test_move import FOLDERS, populate
from yippiemove.transfer import engine
from yippiemove.transfer.model import Endpoint, Options


def _move(
    server, options: Options, monkeypatch, ctx: ssl.SSLContext | None = None
) -> tuple[engine.Mover, list[str], list[int]]:
    """Run a Mover (STARTTLS when ``ctx`` is given); return it, its events, and how many
    workers started."""
    started: list[int] = []
    original = engine.Mover._worker

    async def counting(self, queue, results):  # type: ignore[no-untyped-def]
        started.append(1)
        return await original(self, queue, results)

    monkeypatch.setattr(engine.Mover, "_worker", counting)

    def ep(user: str, pw: str) -> Endpoint:
        if ctx is not None:
            return Endpoint("127.0.0.1", server.port, user, "require-starttls", pw, ssl_context=ctx)
        return Endpoint("127.0.0.1", server.port, user, "none", pw, allow_insecure_auth=True)

    events: list[str] = []
    mover = engine.Mover(
        ep("src", "srcpass"), ep("dst", "dstpass"), options=options, on_event=events.append
    )
    results = asyncio.run(mover.run())
    assert all(r.error is None and r.failed == 0 for r in results)
    return mover, events, started


def test_far_servers_get_more_workers_and_the_copy_is_exact(dovecot, monkeypatch):
    populate(dovecot)
    assert len(FOLDERS) >= 4
    mover, events, started = _move(dovecot, Options(far_rtt=0.0, far_connections=4), monkeypatch)
    assert mover.rtt is not None and mover.rtt > 0
    assert len(started) == 4
    assert any(e.endswith(": 4 workers") and "ms away" in e for e in events), events
    src = mailcheck.snapshot(dovecot.port, "src", "srcpass")
    assert mailcheck.snapshot(dovecot.port, "dst", "dstpass") == src


def test_near_servers_keep_the_usual_workers(dovecot, monkeypatch):
    populate(dovecot)
    mover, events, started = _move(dovecot, Options(far_rtt=10.0), monkeypatch)
    assert mover.rtt is not None and mover.rtt < 10.0
    assert len(started) == 2
    assert not any("ms away" in e for e in events)
    assert mover.budget.limit == Options.memory_budget


def test_an_explicit_count_is_kept_whatever_the_distance(dovecot, monkeypatch):
    """``--connections N`` sets both counts: no growth (the budget still grows)."""
    populate(dovecot)
    mover, _, started = _move(
        dovecot, Options(connections=3, far_connections=3, far_rtt=0.0), monkeypatch
    )
    assert mover.rtt is not None
    assert len(started) == 3
    assert mover.budget.limit == Options.far_memory_budget


def test_a_server_refusing_more_connections_means_fewer_workers(dovecot_factory, monkeypatch):
    """Extra pairs are a bonus: a server at its per-user connection limit refuses some,
    the transfer goes on with the workers it has, exact."""
    server = dovecot_factory(
        users={"src": "srcpass", "dst": "dstpass"},
        extra_config="protocol imap {\n  mail_max_userip_connections = 3\n}\n",
    )
    populate(server)
    _, _, started = _move(server, Options(far_rtt=0.0, far_connections=6), monkeypatch)
    assert 2 <= len(started) < 6
    src = mailcheck.snapshot(server.port, "src", "srcpass")
    assert mailcheck.snapshot(server.port, "dst", "dstpass") == src


@pytest.mark.parametrize("given, expect", [(None, (2, 6)), (3, (3, 3))])
def test_the_service_passes_its_count_or_none(given, expect):
    """The service passes no count by default (automatic) or the operator's count."""
    from yippiemove.jobs.jail import connection_options

    opts = Options(**connection_options({} if given is None else {"connections": given}))
    assert (opts.connections, opts.far_connections) == expect


def test_over_tls_the_far_budget_is_smaller(dovecot, monkeypatch):
    """TLS buffers cost per connection and the servers' TLS work sets the pace there:
    a far link over TLS gets ``far_memory_budget_tls``."""
    populate(dovecot)
    ctx = ssl.create_default_context(cafile=str(dovecot.ca_file))
    mover, _, started = _move(dovecot, Options(far_rtt=0.0, far_connections=3), monkeypatch, ctx)
    assert len(started) == 3
    assert mover.budget.limit == Options.far_memory_budget_tls < Options.far_memory_budget
    src = mailcheck.snapshot(dovecot.port, "src", "srcpass")
    assert mailcheck.snapshot(dovecot.port, "dst", "dstpass") == src


def test_a_far_destination_alone_counts(dovecot, monkeypatch):
    """A near source and a far destination (a local server moved to a provider): the
    folders wait on the destination's round trips, so that is the distance.  The
    destination's NOOP answer and greeting are held back 60 ms here (a seam: loopback
    has no distance to give)."""
    from yippiemove.imap.connection import ImapConnection

    populate(dovecot)
    submit = ImapConnection.submit

    async def slow_noop(self, name, *args, **kw):  # type: ignore[no-untyped-def]
        fut = await submit(self, name, *args, **kw)
        if name != "NOOP" or self.name != "destination":
            return fut
        late = asyncio.get_running_loop().create_future()
        fut.add_done_callback(
            lambda f: asyncio.get_running_loop().call_later(0.06, late.set_result, f.result())
        )
        self.greeted_in = max(self.greeted_in or 0.0, 0.06)
        return late

    monkeypatch.setattr(ImapConnection, "submit", slow_noop)
    mover, _, started = _move(dovecot, Options(far_rtt=0.03, far_connections=4), monkeypatch)
    assert mover.rtt is not None and mover.rtt >= 0.06
    assert len(started) == 4
    src = mailcheck.snapshot(dovecot.port, "src", "srcpass")
    assert mailcheck.snapshot(dovecot.port, "dst", "dstpass") == src
