"""The retry policy (policy/retry.py): classification, backoff, suggested waits, effort."""

from __future__ import annotations

import random
import statistics
import time

import pytest

from yippiemove.cli import throttle_note
from yippiemove.imap.errors import (
    AuthenticationError,
    CommandError,
    ConnectError,
    ConnectionLost,
    ConsentRevoked,
    HostUnreachable,
    InsecureAuthError,
    TlsError,
    TokenRefused,
)
from yippiemove.imap.protocol import ResponseParser, Tagged, Untagged
from yippiemove.policy import retry
from yippiemove.policy.retry import (
    MESSAGE,
    RETRY,
    STOP,
    THROTTLED,
    Backoff,
    Effort,
    GaveUp,
    Stopped,
    Verdict,
    classify,
    suggested_delay,
)
from yippiemove.transfer.model import Progress


def parse(line: bytes) -> Tagged | Untagged:
    """A server line through the real response parser."""
    (r,) = ResponseParser().feed(line + b"\r\n")
    assert isinstance(r, Tagged | Untagged)
    return r


def answer(command: str, line: bytes) -> CommandError:
    r = parse(b"A1 " + line)
    assert isinstance(r, Tagged)
    return CommandError(command, r)


def bye(text: bytes) -> ConnectionLost:
    r = parse(b"* BYE " + text)
    assert isinstance(r, Untagged)
    return ConnectionLost("server said BYE: " + text.decode(), r)


def login_refused(line: bytes) -> AuthenticationError:
    r = parse(b"A1 " + line)
    assert isinstance(r, Tagged)
    return AuthenticationError("h refused the login for 'u': ...", r)


def token_refused(line: bytes) -> TokenRefused:
    r = parse(b"A1 " + line)
    assert isinstance(r, Tagged)
    return TokenRefused("h refused the OAuth2 access token for 'u': ...", r, status="401")


CASES = [
    # (error, verdict kind, suggested delay)
    (ConnectionLost("connection to h lost: reset"), RETRY, None),
    (ConnectionLost("no answer from h for 120 s"), RETRY, None),
    (ConnectError("no answer from h:143 within 30 s"), RETRY, None),
    (HostUnreachable("cannot connect to h:143: Connection refused"), RETRY, None),
    (bye(b"Server shutting down."), RETRY, None),
    (bye(b"[UNAVAILABLE] Temporary System Error"), RETRY, None),
    (bye(b"Request is throttled. Suggested Backoff Time: 2500 milliseconds"), THROTTLED, 2.5),
    (answer("APPEND", b"NO [UNAVAILABLE] Temporary System Error"), RETRY, None),
    (answer("SELECT", b"NO [INUSE] Mailbox is locked"), RETRY, None),
    (answer("UID FETCH", b"NO [SERVERBUG] Internal error occurred."), RETRY, None),
    (answer("SELECT", b"NO Server Unavailable. 15"), RETRY, None),
    (
        answer(
            "UID FETCH", b"BAD Request is throttled. Suggested Backoff Time: 201317 milliseconds"
        ),
        THROTTLED,
        201.317,
    ),
    (answer("APPEND", b"NO Request is throttled. Suggested Backoff Time: 10 ms"), THROTTLED, 0.01),
    (
        answer(
            "UID FETCH", b"NO [OVERQUOTA] Account exceeded command or bandwidth limits. (Failure)"
        ),
        THROTTLED,
        None,
    ),
    (
        login_refused(b"NO [ALERT] Too many simultaneous connections. (Failure)"),
        THROTTLED,
        None,
    ),
    (login_refused(b"NO [UNAVAILABLE] Try again later"), RETRY, None),
    (login_refused(b"NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)"), STOP, None),
    (login_refused(b"NO Authentication failed."), STOP, None),
    (AuthenticationError("h does not allow logging in (LOGINDISABLED)"), STOP, None),
    # OAuth2: transfer/store.py already tried a fresh token once; then it stops.
    (token_refused(b"NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)"), STOP, None),
    (token_refused(b"NO [UNAVAILABLE] Try again later"), RETRY, None),
    (token_refused(b"NO [ALERT] Too many simultaneous connections. (Failure)"), THROTTLED, None),
    (ConsentRevoked(), STOP, None),
    (ConsentRevoked("the provider said invalid_grant"), STOP, None),
    (TlsError("TLS with h failed"), STOP, None),
    (InsecureAuthError("refusing to send the password"), STOP, None),
    (answer("APPEND", b"NO [OVERQUOTA] Quota exceeded (mailbox for user is full)"), STOP, None),
    (answer("APPEND", b"NO [LIMIT] Mail size is too large"), MESSAGE, None),
    (answer("APPEND", b"BAD [TOOBIG] Message too large."), MESSAGE, None),
    (answer("APPEND", b"NO [TRYCREATE] Mailbox doesn't exist: X"), MESSAGE, None),
    (answer("APPEND", b"NO Message contains NUL characters"), MESSAGE, None),
    (answer("UID FETCH", b"NO [NOPERM] Permission denied"), MESSAGE, None),
    (GaveUp("gave up", ConnectionLost("x")), STOP, None),
    (Stopped("full"), STOP, None),
    (ValueError("a bug"), STOP, None),
]


@pytest.mark.parametrize(("error", "kind", "delay"), CASES, ids=[str(c[0])[:50] for c in CASES])
def test_classification_table(error, kind, delay):
    v = classify(error)
    assert v.kind == kind, v
    assert v.retry is (kind in (RETRY, THROTTLED))
    assert retry.retryable(error) is v.retry
    if delay is None:
        assert v.delay is None
    else:
        assert v.delay == pytest.approx(delay)


def test_consent_revoked_says_sign_in_again_and_is_raised_as_it_is():
    exc = ConsentRevoked("the provider said invalid_grant")
    assert "sign in again" in str(exc) and "sign in again" in str(ConsentRevoked())
    assert isinstance(exc, AuthenticationError) and not exc.transient
    effort = Effort(5, Backoff(rng=random.Random(1)))
    verdict = classify(exc)
    assert effort.next_wait(verdict) is None
    assert effort.give_up("folder 'INBOX'", exc, verdict) is exc  # the job sees it as such


def test_over_quota_names_the_destination_and_says_what_to_do():
    exc = answer("APPEND", b"NO [OVERQUOTA] Quota exceeded (mailbox for user is full)")
    v = classify(exc)
    assert "destination mailbox is over its quota" in v.why
    assert "Quota exceeded" in v.why
    stop = Effort(3, Backoff()).give_up("folder 'INBOX'", exc, v)
    assert isinstance(stop, Stopped) and not stop.transient
    assert "make room or raise the quota" in str(stop)
    assert "run the same command again" in str(stop)


def test_a_permanent_error_that_is_not_an_answer_is_raised_as_it_is():
    exc = login_refused(b"NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)")
    assert Effort(3, Backoff()).give_up("planning", exc, classify(exc)) is exc


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("Request is throttled. Suggested Backoff Time: 201317 milliseconds", 201.317),
        ("request is throttled. suggested backoff time: 5 milliseconds", 0.005),
        ("Suggested Backoff Time: 1 millisecond", 0.001),
        ("Suggested Backoff Time: 300", 0.3),  # Microsoft's unit when none is written
        ("Suggested Backoff Time: 250 ms", 0.25),
        ("Suggested Backoff Time: 30 seconds", 30.0),
        ("Suggested Backoff Time: 2 s.", 2.0),
        ("Suggested Backoff Time: 1.5 seconds", 1.5),
        ("Request is throttled.", None),
        ("Temporary System Error", None),
        ("", None),
    ],
)
def test_suggested_delay_parsing(text, seconds):
    got = suggested_delay(text)
    if seconds is None:
        assert got is None
    else:
        assert got == pytest.approx(seconds)


def test_backoff_is_exponential_capped_and_jittered_within_bounds():
    b = Backoff(base=1.0, cap=20.0, rng=random.Random(1))
    assert [b.step(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 20, 20]
    assert b.step(10_000) == 20  # no overflow for absurd counts
    for n in range(1, 12):
        s = b.step(n)
        waits = [b.delay(n) for _ in range(300)]
        assert all(s / 2 <= w <= s for w in waits), (n, min(waits), max(waits))
        # jittered: spread over the interval, not one value
        assert statistics.pstdev(waits) > s / 20
        assert min(waits) < s * 0.6 and max(waits) > s * 0.9


def test_backoff_jitter_is_deterministic_from_the_seed():
    a = Backoff(rng=random.Random(42))
    b = Backoff(rng=random.Random(42))
    c = Backoff(rng=random.Random(43))
    seq_a = [a.delay(n) for n in range(1, 9)]
    assert seq_a == [b.delay(n) for n in range(1, 9)]
    assert seq_a != [c.delay(n) for n in range(1, 9)]


def test_suggested_delay_is_honoured_never_earlier_and_capped():
    b = Backoff(base=1.0, cap=60.0, rng=random.Random(5))
    for _ in range(200):
        w = b.delay(1, suggested=7.5)
        assert 7.5 <= w <= 7.5 * 1.1
    # larger than our own first step, and independent of the attempt number
    assert b.delay(9, suggested=0.2) == pytest.approx(0.2, rel=0.11)
    assert b.delay(1, suggested=500.0) == 60.0  # capped at max_backoff


def test_effort_gives_up_after_attempts_without_progress():
    e = Effort(3, Backoff(base=0.5, cap=4, rng=random.Random(0)))
    v = Verdict(RETRY, "dropped")
    waits = [e.next_wait(v, reached=0) for _ in range(3)]
    assert all(w is not None and w > 0 for w in waits)
    assert e.next_wait(v, reached=0) is None
    assert e.total == 3 and e.failures == 3
    assert e.waited == pytest.approx(sum(waits))  # type: ignore[arg-type]
    err = e.give_up("folder 'INBOX'", ConnectionLost("connection to h lost"), v)
    assert isinstance(err, GaveUp) and err.transient
    assert "folder 'INBOX': gave up after 4 attempts in a row without progress" in str(err)
    assert "connection to h lost" in str(err) and "run the same command again" in str(err).lower()


def test_effort_starts_again_when_a_pass_gets_further():
    e = Effort(2, Backoff(base=0.01, cap=0.02, rng=random.Random(0)))
    v = Verdict(RETRY, "dropped")
    assert e.next_wait(v, reached=10) is not None  # 1st failure
    assert e.next_wait(v, reached=10) is not None  # 2nd, no progress
    assert e.next_wait(v, reached=10) is None  # 3rd in a row: give up
    e = Effort(2, Backoff(base=0.01, cap=0.02, rng=random.Random(0)))
    for reached in (10, 10, 25, 25, 40, 40):
        assert e.next_wait(v, reached=reached) is not None
    assert e.next_wait(v, reached=40) is None
    assert e.total == 6
    # progress counts only beyond the best pass so far
    e = Effort(1, Backoff(base=0.01, cap=0.02, rng=random.Random(0)))
    assert e.next_wait(v, reached=30) is not None
    assert e.next_wait(v, reached=5) is None


def test_effort_zero_retries_and_permanent_errors_never_wait():
    assert Effort(0, Backoff()).next_wait(Verdict(RETRY, "x")) is None
    e = Effort(5, Backoff())
    assert e.next_wait(Verdict(STOP, "full")) is None
    assert e.next_wait(Verdict(MESSAGE, "too big")) is None
    assert e.total == 0


def test_effort_waits_grow_and_a_throttle_hint_is_used():
    e = Effort(6, Backoff(base=1.0, cap=10.0, rng=random.Random(3)))
    waits = [e.next_wait(Verdict(RETRY, "x")) for _ in range(5)]
    steps = [1, 2, 4, 8, 10]
    for w, s in zip(waits, steps, strict=True):
        assert w is not None and s / 2 <= w <= s
    w = e.next_wait(Verdict(THROTTLED, "slow down", delay=3.0))
    assert w is not None and 3.0 <= w <= 3.3


def test_progress_line_shows_throttled_until():
    p = Progress()
    assert throttle_note(p) == ""
    now = 1_700_000_000.0
    p.throttled_until = now + 30
    assert throttle_note(p, now) == ", throttled until " + time.strftime(
        "%H:%M:%S", time.localtime(now + 30)
    )
    p.throttled_until = now + 3600
    assert throttle_note(p, now) == ", throttled until " + time.strftime(
        "%H:%M", time.localtime(now + 3600)
    )
    p.throttled_until = now - 1  # over
    assert throttle_note(p, now) == ""
