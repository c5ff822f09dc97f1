"""Transfers that log in with OAuth2 access tokens, between real servers: Dovecot whose
``oauth2`` passdb checks every token at the test provider's introspection endpoint
(tests/doubles/oauth2.py), through fault proxies (tests/faultproxy.py) that slow the
connections and cut them, so that the mover reconnects after its tokens expired.

The tokens come from the oauth layer's ``GrantTokenSource`` on a refresh grant the
provider gave for a real authorization-code sign-in (tests/transfer/oauthkit.py).
Every test ends exact (tests/mailcheck.py, message by message with multiplicity), or
stops with a clear message and nothing doubled, and a re-run completes it exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta

import pytest

from tests import mailcheck
from tests.doubles.oauth2 import OAuthServer
from tests.faultproxy import Fault, FaultProxy
from tests.transfer.oauthkit import config_for, sign_in, token_source
from tests.transfer.test_move import assert_exact, make_message, populate
from yippiemove.imap.errors import ConsentRevoked
from yippiemove.oauth import GrantTokenSource
from yippiemove.transfer.engine import Mover
from yippiemove.transfer.model import Endpoint, Options, TokenSource
from yippiemove.transfer.state import State

SRC, DST = "src@example.test", "dst@example.test"


def endpoint(port: int, user: str, tokens: TokenSource) -> Endpoint:
    # Plain text through the proxy on loopback; the password is never used.
    return Endpoint(
        "127.0.0.1", port, user, security="none", allow_insecure_auth=True, oauth=tokens
    )


def run_mover(
    src: Endpoint, dst: Endpoint, state: State, *, connections: int, **opts: object
) -> Mover:
    # As many workers however slow the proxy makes the link look (no "far" extra workers).
    options = Options(
        max_backoff=0.5,
        connections=connections,
        far_connections=connections,
        **opts,  # type: ignore[arg-type]
    )
    mover = Mover(src, dst, state=state, options=options)
    asyncio.run(asyncio.wait_for(mover.run(), timeout=120))
    return mover


def schedule(
    faults: dict[int, Sequence[Fault]],
    default: Sequence[Fault] = (),
    on_accept: Callable[[int], None] | None = None,
) -> Callable[[int], Sequence[Fault]]:
    """A proxy schedule: ``faults[n]`` for the n-th connection, ``default`` for the
    others; ``on_accept(n)`` runs as the connection is accepted (before its greeting)."""

    def faults_for(n: int) -> Sequence[Fault]:
        if on_accept is not None:
            on_accept(n)
        return faults.get(n, default)

    return faults_for


def test_a_transfer_outlives_many_token_expiries_through_reconnects(
    dovecot_oauth, oauth_server: OAuthServer, tmp_path
):
    """Tokens live 1 s; the source runs at 20 kB/s per connection and is cut three times,
    the destination is told ``* BYE ... AccessTokenExpired`` (as Microsoft does when a
    session outlives its token) once: every reconnect logs in with a token valid then,
    and the mailbox arrives exact."""
    populate(dovecot_oauth, SRC)
    dovecot_oauth.deliver_many(SRC, "Sent", [make_message(2000 + i, size=12_000) for i in range(8)])
    oauth_server.access_lifetime = 1.0
    src_tokens = token_source(oauth_server, tmp_path, SRC)
    dst_tokens = token_source(oauth_server, tmp_path, DST)
    slow = Fault.throttle(25_000)
    src_faults = {
        0: [slow, Fault.cut(30_000)],
        1: [slow, Fault.cut(25_000)],
        3: [slow, Fault.cut(20_000)],
    }
    expired = Fault.bye("APPEND", "Session invalidated - AccessTokenExpired", nth=3)
    state = State(tmp_path / "state.sqlite")
    with (
        FaultProxy(dovecot_oauth.port, schedule(src_faults, [slow])) as ps,
        FaultProxy(dovecot_oauth.port, schedule({}, [expired])) as pd,
    ):
        t0 = time.monotonic()
        try:
            mover = run_mover(
                endpoint(ps.port, SRC, src_tokens), endpoint(pd.port, DST, dst_tokens), state,
                connections=2,
            )  # fmt: skip
        finally:
            state.close()
        seconds = time.monotonic() - t0
        cuts, byes = ps.kinds()["cut"], pd.kinds()["bye"]
    assert cuts == 3 and byes >= 1, (ps.injected, pd.injected)
    assert mover.progress.reconnects >= 4
    results = mover.results or []
    assert sum(r.failed for r in results) == 0
    # The run outlived at least three generations of tokens, renewed at the reconnects
    # (a session already open keeps going on Dovecot; each login needs a live token).
    assert seconds >= 3 * oauth_server.access_lifetime, seconds
    fetched = src_tokens.fetched + dst_tokens.fetched
    assert fetched >= 4 and src_tokens.fetched >= 2, (src_tokens.fetched, dst_tokens.fetched)
    assert oauth_server.refreshed == fetched
    assert_exact(dovecot_oauth, dovecot_oauth, src_user=SRC, dst_user=DST)


def test_a_token_refused_at_a_reconnect_is_refreshed_on_a_new_connection(
    dovecot_oauth, oauth_server: OAuthServer, tmp_path
):
    """The cached token looks valid for an hour, but the provider expired it meanwhile
    (clock skew, a server-side revocation of that token): Dovecot refuses it at the
    reconnect; the mover gets a fresh one and logs in on a new connection, once."""
    populate(dovecot_oauth, SRC)
    src_tokens = token_source(oauth_server, tmp_path, SRC)
    dst_tokens = token_source(oauth_server, tmp_path, DST)
    issued = oauth_server.issued

    def expire(n: int) -> None:
        if n == 1:  # the reconnect after the cut
            oauth_server.expire_access_tokens(SRC)

    slow = Fault.throttle(40_000)
    state = State(tmp_path / "state.sqlite")
    with (
        FaultProxy(
            dovecot_oauth.port, schedule({0: [slow, Fault.cut(20_000)]}, on_accept=expire)
        ) as ps,
        FaultProxy(dovecot_oauth.port) as pd,
    ):
        try:
            mover = run_mover(
                endpoint(ps.port, SRC, src_tokens), endpoint(pd.port, DST, dst_tokens), state,
                connections=1,
            )  # fmt: skip
        finally:
            state.close()
        connections = ps.connections
    # 0: planning and the worker, cut; 1: the refused login; 2: the fresh token's.
    assert connections == 3, ps.injected
    assert src_tokens.fetched == 1 and oauth_server.issued == issued + 1
    assert sum(r.failed for r in mover.results or []) == 0
    assert_exact(dovecot_oauth, dovecot_oauth, src_user=SRC, dst_user=DST)


def test_consent_revoked_mid_transfer_stops_clearly_then_a_new_sign_in_resumes_exact(
    dovecot_oauth, oauth_server: OAuthServer, tmp_path
):
    """The user revokes the mover's access while it runs: at the next reconnect the
    provider refuses the refresh -> ConsentRevoked ("sign in again"), the transfer stops
    at once (no retries), nothing is doubled; after a new consent the same state
    resumes it, exact."""
    populate(dovecot_oauth, SRC)
    config = config_for(oauth_server, tmp_path)
    src_tokens = GrantTokenSource(sign_in(oauth_server, config, SRC), config)
    dst_tokens = token_source(oauth_server, tmp_path, DST)

    def revoke(n: int) -> None:
        if n == 1:
            oauth_server.revoke(SRC)

    slow = Fault.throttle(40_000)
    state = State(tmp_path / "state.sqlite")
    with (
        FaultProxy(
            dovecot_oauth.port, schedule({0: [slow, Fault.cut(25_000)]}, on_accept=revoke)
        ) as ps,
        FaultProxy(dovecot_oauth.port) as pd,
    ):
        try:
            with pytest.raises(ConsentRevoked, match="sign in again") as e:
                run_mover(
                    endpoint(ps.port, SRC, src_tokens), endpoint(pd.port, DST, dst_tokens),
                    state, connections=1, retries=5,
                )  # fmt: skip
        finally:
            state.close()
        connections = ps.connections
    assert "invalid_grant" in str(e.value)
    assert connections == 2  # no retry loop: the refused login was the last connection
    # Nothing doubled, something copied, not everything.
    src = mailcheck.snapshot(dovecot_oauth.port, SRC, "srcpass")
    dst = mailcheck.snapshot(dovecot_oauth.port, DST, "dstpass")
    copied = sum(len(v) for v in dst.values())
    assert 0 < copied < sum(len(v) for v in src.values())
    for folder, msgs in dst.items():
        assert not Counter(msgs) - Counter(src[folder]), folder

    # Sign in again: a new grant, the same state; the rest, exact.
    again = GrantTokenSource(sign_in(oauth_server, config, SRC), config)
    state = State(tmp_path / "state.sqlite")
    try:
        run_mover(
            endpoint(dovecot_oauth.port, SRC, again), endpoint(dovecot_oauth.port, DST, dst_tokens),
            state, connections=1,
        )  # fmt: skip
    finally:
        state.close()
    assert_exact(dovecot_oauth, dovecot_oauth, src_user=SRC, dst_user=DST)


def test_into_the_gmail_double_with_xoauth2_and_bye_on_expiry_exact(
    dovecot, gmail_oauth, oauth_server: OAuthServer, tmp_path
):
    """Folders -> Gmail, the destination logging in with XOAUTH2 only (as Microsoft's
    servers offer it), its sessions ended by ``* BYE ... AccessTokenExpired`` at the
    first command after their 3 s token expired, over a slow link: every BYE is a
    reconnect with a fresh token, and Gmail ends up holding each message once with its
    labels, as without OAuth2."""
    from tests.transfer.test_gmail_moves import DST as GDST
    from tests.transfer.test_gmail_moves import WHEN, expected_gmail, gmail_contents, msg, seed_in

    folders = seed_in(dovecot)
    for f in range(2):  # more mail: the run outlives several tokens, a pass fits in one
        items = [
            (msg(n, size=3000 + 97 * n), ("\\Seen",), WHEN + timedelta(hours=n))
            for n in range(300 + 10 * f, 308 + 10 * f)
        ]
        folders[f"Project {f}"] = items
        for raw, flags, when in items:
            dovecot.deliver("src", f"Project {f}", raw, flags, when)
    gmail_oauth.oauth_mechanisms = ("XOAUTH2",)
    gmail_oauth.bye_on_expiry = True
    oauth_server.access_lifetime = 3.0
    dst_tokens = token_source(oauth_server, tmp_path, GDST)
    src = Endpoint("127.0.0.1", dovecot.port, "src", "none", "srcpass", allow_insecure_auth=True)
    state = State(tmp_path / "state.sqlite")
    with FaultProxy(gmail_oauth.port, schedule({}, [Fault.throttle(40_000)])) as pd:
        t0 = time.monotonic()
        try:
            mover = run_mover(src, endpoint(pd.port, GDST, dst_tokens), state, connections=2)
        finally:
            state.close()
        seconds = time.monotonic() - t0
        connections = pd.connections
    assert sum(r.failed for r in mover.results or []) == 0
    assert gmail_oauth.unsupported() == [] and gmail_oauth.internal_errors == []
    assert gmail_contents(gmail_oauth) == expected_gmail(folders)
    logins = [r for r in gmail_oauth.command_log if r.command == "AUTHENTICATE"]
    assert logins and all(r.status == "OK" for r in logins), logins
    byes = seconds // oauth_server.access_lifetime
    assert seconds >= 2 * oauth_server.access_lifetime and mover.progress.reconnects >= 1
    assert connections >= 3 and dst_tokens.fetched >= 1, (connections, byes)
