"""The credit ledger (issue 20, service/ledger.py), on SQLite and on a real PostgreSQL
(where spends really run at once: the account's row lock decides).

Balances are sums of keyed entries; a spend never overspends, even 20 at once on one
balance; the same key twice (one after the other, or at once) is one entry; two
sessions making a customer's account at once make one."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from yippiemove.service import ledger
from yippiemove.service.db import BillingAccount, Database, LedgerEntry, User
from yippiemove.service.ledger import InsufficientCredit


@pytest.fixture(params=["sqlite", "postgresql"])
def control_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'control.sqlite'}"
    return request.getfixturevalue("postgres").url


@pytest.fixture
def hosts(control_url: str) -> Iterator[list[Database]]:
    """Two hosts: two Database objects (two connection pools) on one database."""
    dbs = [Database(control_url), Database(control_url, prepare=False)]
    yield dbs
    for db in dbs:
        db.dispose()


@pytest.fixture
def db(hosts: list[Database]) -> Database:
    return hosts[0]


def at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` in threads released together; their results (or exceptions)."""
    start = threading.Barrier(len(calls))
    out: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        try:
            out[i] = calls[i]()
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def new_user(db: Database, email: str = "alice@example.org") -> int:
    with db.session() as s:
        user = User(email=email, password_hash="x")
        s.add(user)
        s.flush()
        return user.id


def new_account(db: Database, credit: int = 0) -> int:
    uid = new_user(db)
    with db.session() as s:
        account = ledger.account_for_user(s, uid)
        if credit:
            ledger.post(s, account, credit, "grant", "start", actor="test")
    return account


def balance_of(db: Database, account: int) -> int:
    with db.read() as s:
        return ledger.balance(s, account)


def keys_of(db: Database, account: int) -> list[str]:
    with db.read() as s:
        return [e.key for e in ledger.entries(s, account, limit=1000)]


# ---------------------------------------------------------------------- sums


def test_grants_and_spends_sum_right_and_the_balance_never_goes_negative(db: Database) -> None:
    account = new_account(db)
    assert balance_of(db, account) == 0  # no entries: 0, not None
    with db.session() as s:
        assert ledger.post(s, account, 1500, "grant", "welcome", actor="op@example.org")
        assert ledger.post(s, account, 1000, "purchase", "pi_1", payment_id="pi_1")
        spent = ledger.spend(s, account, 1200, "order:a", order_id="a", job_id="j1")
        assert spent is not None and (spent.amount, spent.kind) == (-1200, "spend")
        assert ledger.post(s, account, 1200, "refund", "refund:j1", job_id="j1")
        assert ledger.post(s, account, -300, "adjust", "fix-1", note="a correction")
        assert ledger.balance(s, account) == 1500 + 1000 - 1200 + 1200 - 300
    assert balance_of(db, account) == 2200
    # More than the balance: refused, nothing inserted, the balance unchanged.
    with pytest.raises(InsufficientCredit) as e:
        with db.session() as s:
            ledger.spend(s, account, 2201, "order:b")
    assert "balance of 2200" in str(e.value) and "2201" in str(e.value)
    assert (e.value.balance, e.value.amount) == (2200, 2201)
    with pytest.raises(InsufficientCredit):
        with db.session() as s:
            ledger.post(s, account, -2201, "adjust", "fix-2")
    assert balance_of(db, account) == 2200
    # Exactly the balance: taken, to 0; then not one more minor unit.
    with db.session() as s:
        assert ledger.spend(s, account, 2200, "order:c") is not None
    with pytest.raises(InsufficientCredit, match="balance of 0"):
        with db.session() as s:
            ledger.spend(s, account, 1, "order:d")
    assert balance_of(db, account) == 0
    assert "order:b" not in keys_of(db, account) and "order:d" not in keys_of(db, account)


def test_entries_newest_first_a_page_at_a_time(db: Database) -> None:
    account = new_account(db)
    with db.session() as s:
        for n in range(7):
            ledger.post(s, account, 10 + n, "grant", f"g{n}")
    with db.read() as s:
        first = ledger.entries(s, account, limit=3)
        assert [e.key for e in first] == ["g6", "g5", "g4"]
        second = ledger.entries(s, account, limit=3, before_id=first[-1].id)
        assert [e.key for e in second] == ["g3", "g2", "g1"]
        last = ledger.entries(s, account, limit=3, before_id=second[-1].id)
        assert [e.key for e in last] == ["g0"]
        assert ledger.entries(s, account + 1) == []  # another account's: none


def test_bad_amounts_kinds_and_keys_are_refused_naming_the_value(db: Database) -> None:
    account = new_account(db, credit=100)
    with db.session() as s:
        for kind in ("grant", "purchase", "refund"):
            for bad in (0, -5):
                with pytest.raises(ValueError, match=f"a {kind} takes a positive amount.*{bad}"):
                    ledger.post(s, account, bad, kind, f"k-{kind}-{bad}")
        with pytest.raises(ValueError, match=r"not 12\.5"):
            ledger.post(s, account, 12.5, "grant", "float")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="not '10'"):
            ledger.post(s, account, "10", "grant", "str")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="not True"):
            ledger.post(s, account, True, "grant", "bool")
        with pytest.raises(ValueError, match=r"a adjust takes a non-zero amount.*not 0"):
            ledger.post(s, account, 0, "adjust", "zero")
        for bad in (0, -10):
            with pytest.raises(ValueError, match=f"a spend takes a positive amount.*not {bad}"):
                ledger.spend(s, account, bad, f"s{bad}")
        with pytest.raises(ValueError, match=r"ledger\.spend"):
            ledger.post(s, account, 10, "spend", "via-post")
        with pytest.raises(ValueError, match="'gift'"):
            ledger.post(s, account, 10, "gift", "kind")
        with pytest.raises(ValueError, match="ledger key"):
            ledger.post(s, account, 10, "grant", "")
        with pytest.raises(ValueError, match="ledger key"):
            ledger.post(s, account, 10, "grant", "k" * 256)
        with pytest.raises(ValueError, match="at most 500 characters, not 501"):
            ledger.post(s, account, 10, "grant", "long-note", note="n" * 501)
        with pytest.raises(LookupError, match="no billing account"):
            ledger.spend(s, account + 99, 10, "nobody")
    assert keys_of(db, account) == ["start"] and balance_of(db, account) == 100


# ---------------------------------------------------------------------- idempotent keys


def test_the_same_key_twice_is_one_entry(db: Database) -> None:
    account = new_account(db)
    with db.session() as s:
        assert ledger.post(s, account, 500, "purchase", "pi_9", payment_id="pi_9") is not None
    with db.session() as s:  # the webhook, replayed
        assert ledger.post(s, account, 500, "purchase", "pi_9", payment_id="pi_9") is None
    with db.session() as s:
        assert ledger.spend(s, account, 300, "order:x") is not None
        assert ledger.spend(s, account, 300, "order:x") is None  # same transaction too
    with db.session() as s:
        # Replayed after the balance went below it: still a no-op, not InsufficientCredit.
        assert ledger.spend(s, account, 300, "order:x") is None
        assert ledger.post(s, account, 300, "refund", "refund:j") is not None
        assert ledger.post(s, account, 300, "refund", "refund:j") is None  # second refund
    assert sorted(keys_of(db, account)) == ["order:x", "pi_9", "refund:j"]
    assert balance_of(db, account) == 500
    # A key is per account: another account may use it.
    other = ledger_account(db, "bob@example.org")
    with db.session() as s:
        assert ledger.post(s, other, 500, "purchase", "pi_9") is not None


def ledger_account(db: Database, email: str) -> int:
    uid = new_user(db, email)
    with db.session() as s:
        return ledger.account_for_user(s, uid)


def test_the_same_key_from_two_hosts_at_once_is_one_entry(hosts: list[Database]) -> None:
    account = new_account(hosts[0], credit=1000)
    for n in range(5):

        def grant(db: Database, n: int = n) -> LedgerEntry | None:
            with db.session() as s:
                return ledger.post(s, account, 100, "purchase", f"pi_{n}")

        def take(db: Database, n: int = n) -> LedgerEntry | None:
            with db.session() as s:
                return ledger.spend(s, account, 50, f"order:{n}")

        for call in (grant, take):
            got = at_once([lambda db=db, call=call: call(db) for db in hosts])
            assert not [g for g in got if isinstance(g, Exception)], got
            assert sum(g is not None for g in got) == 1, got
    assert balance_of(hosts[0], account) == 1000 + 5 * 100 - 5 * 50
    assert len(keys_of(hosts[0], account)) == 1 + 5 + 5


# ---------------------------------------------------------------------- concurrency


def test_concurrent_spends_never_overspend(hosts: list[Database]) -> None:
    """Balance 100; 20 threads, each its own transaction on its own connection (half on
    each host), each spending 10 under its own key: exactly 10 succeed."""
    account = new_account(hosts[0], credit=100)

    def spend(n: int) -> LedgerEntry | None:
        with hosts[n % 2].session() as s:
            return ledger.spend(s, account, 10, f"order:{n}", order_id=str(n))

    got = at_once([lambda n=n: spend(n) for n in range(20)])
    spent = [g for g in got if isinstance(g, LedgerEntry)]
    refused = [g for g in got if isinstance(g, InsufficientCredit)]
    assert (len(spent), len(refused)) == (10, 10), got
    assert all(r.balance == 0 and r.amount == 10 for r in refused), refused
    assert balance_of(hosts[1], account) == 0
    with hosts[1].read() as s:
        assert s.query(LedgerEntry).filter_by(account_id=account, kind="spend").count() == 10


def test_two_sessions_making_one_customers_account_at_once_make_one(
    hosts: list[Database],
) -> None:
    uids = [new_user(hosts[0], f"u{n}@example.org") for n in range(5)]
    made: dict[int, int] = {}
    for uid in uids:

        def make(db: Database, uid: int = uid) -> int:
            with db.session() as s:
                return ledger.account_for_user(s, uid)

        got = at_once([lambda db=db: make(db) for db in hosts])
        assert not [g for g in got if isinstance(g, Exception)], got
        assert got[0] == got[1], got
        with hosts[1].read() as s:
            rows = s.scalars(select(BillingAccount).where(BillingAccount.user_id == uid)).all()
            assert [r.id for r in rows] == [got[0]]
            assert rows[0].company is None
        made[uid] = got[0]
    # And later calls find it.
    with hosts[1].session() as s:
        assert {uid: ledger.account_for_user(s, uid) for uid in uids} == made
    with hosts[0].read() as s:
        assert s.query(BillingAccount).count() == 5


def test_account_for_an_unknown_user_fails_and_a_company_account_has_no_user(
    db: Database,
) -> None:
    with pytest.raises(Exception, match=r"(?i)foreign key"):
        with db.session() as s:
            ledger.account_for_user(s, 4242)
    with db.session() as s:
        company = BillingAccount(company="Reseller Ltd")
        s.add(company)
        s.flush()
        ledger.post(s, company.id, 10_000, "purchase", "bundle-1")
        assert ledger.spend(s, company.id, 1_000, "order:1") is not None
        assert ledger.balance(s, company.id) == 9_000


def test_deleting_the_customer_deletes_their_account_and_entries(db: Database) -> None:
    account = new_account(db, credit=100)
    with db.session() as s:
        s.delete(s.get(User, s.get(BillingAccount, account).user_id))  # type: ignore[union-attr]
    with db.read() as s:
        assert s.get(BillingAccount, account) is None
        assert s.query(LedgerEntry).count() == 0
