"""Billing (issue 20, service/billing.py) without a card: quotes measured on a real
Dovecot, orders that wait until covered, credits granted and spent, never overspent,
refunds after our failures, free re-runs.  The card payments are in
tests/service/test_payments.py (a real local Stripe)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from sqlalchemy import select

from tests import mailcheck
from tests.svckit import DST_PW, SRC_PW, account, assert_exact, wait_status
from tests.transfer.test_move import make_message
from yippiemove.service import ledger
from yippiemove.service.billing import PaymentRequired, quote_order
from yippiemove.service.core import AlreadyActive, Conflict, NotFound
from yippiemove.service.db import Job, LedgerEntry
from yippiemove.service.jobhost import SqlJobStore

OWNER = "payer@example.org"
#: 1 MB for 500, anything bigger for 2500 (minor units).
BILLING: dict[str, Any] = {
    "billing_enabled": True,
    "price_bands": "1MB:500,*:2500",
    "stripe_secret_key": "sk_test_unused",
    "stripe_publishable_key": "pk_test_unused",
    "stripe_webhook_secret": "whsec_unused",
}


@pytest.fixture
def server(dovecot_factory):
    srv = dovecot_factory(users={"src": SRC_PW, "dst": DST_PW, "src2": SRC_PW, "dst2": DST_PW})
    for user in ("src", "src2"):
        for n in range(6):
            srv.deliver(user, "INBOX", make_message(n, size=2000))
    return srv


def quote(svc, uid, server, user="src", folders=None):
    return asyncio.run(quote_order(svc, uid, account(server, user, SRC_PW), None, folders))


def balance(svc, uid) -> int:
    return svc.billing.summary(uid)["balance"]


def test_without_billing_nothing_changes_and_no_quote_is_needed(make_service, server):
    svc = make_service(ca_file=str(server.ca_file))
    uid = svc.create_user(OWNER, "long enough pass")
    with pytest.raises(Conflict, match="does not charge"):
        quote(svc, uid, server)
    job = svc.create_transfer(uid, account(server, "src", SRC_PW), account(server, "dst", DST_PW))
    assert job.status == "queued"


def test_an_order_needs_a_quote_of_its_own_mailbox(make_service, server):
    svc = make_service(ca_file=str(server.ca_file), **BILLING)
    uid = svc.create_user(OWNER, "long enough pass")
    other = svc.create_user("other@example.org", "long enough pass")
    src, dst = account(server, "src", SRC_PW), account(server, "dst", DST_PW)
    with pytest.raises(PaymentRequired, match="get a quote first"):
        svc.create_transfer(uid, src, dst)
    q = quote(svc, uid, server)
    # Measured on the server: 6 messages of about 2 kB, the first band.
    assert q.messages == 6 and 12_000 <= q.bytes <= 14_000, q
    assert (q.price, q.to_pay, q.currency) == (500, 500, "usd")
    assert q.lines[0]["amount"] == 500 and "1 MB" in q.lines[0]["text"], q.lines
    with pytest.raises(PaymentRequired, match="no such quote"):
        svc.create_transfer(other, src, dst, quote_id=q.id)  # another customer's
    with pytest.raises(PaymentRequired, match="another source mailbox or folder choice"):
        svc.create_transfer(uid, account(server, "src2", SRC_PW), dst, quote_id=q.id)
    with pytest.raises(PaymentRequired, match="another source mailbox or folder choice"):
        svc.create_transfer(uid, src, dst, {"include": ["INBOX"], "exclude": []}, quote_id=q.id)
    job = svc.create_transfer(uid, src, dst, quote_id=q.id)
    assert job.status == "awaiting_payment"
    # Used: not a second time (a second order of another destination).
    with pytest.raises(PaymentRequired, match="used by another order"):
        svc.create_transfer(uid, src, account(server, "dst2", DST_PW), quote_id=q.id)
    # Expired.
    q2 = quote(svc, uid, server, "src2")
    svc.clock = lambda: time.time() + svc.settings.quote_seconds + 1
    with pytest.raises(PaymentRequired, match="expired"):
        svc.create_transfer(uid, account(server, "src2", SRC_PW), dst, quote_id=q2.id)
    with svc.db.read() as s:
        assert s.scalar(select(Job.id).where(Job.id != job.id)) is None  # nothing else stored


def test_a_waiting_order_never_runs_until_covered_then_runs_exactly(make_service, server):
    svc = make_service(ca_file=str(server.ca_file), **BILLING)
    svc.start(1)
    uid = svc.create_user(OWNER, "long enough pass")
    src, dst = account(server, "src", SRC_PW), account(server, "dst", DST_PW)
    q = quote(svc, uid, server)
    job = svc.create_transfer(uid, src, dst, quote_id=q.id)
    assert job.status == "awaiting_payment"
    # A second identical order (a double click, a retried call) finds the first.
    q_again = quote(svc, uid, server)
    with pytest.raises(AlreadyActive) as exc:
        svc.create_transfer(uid, src, dst, quote_id=q_again.id)
    assert exc.value.job_id == job.id
    # Even a queue message for it (a stray one, a sweep) does not run it.
    svc._enqueue(job.id)
    time.sleep(1.5)
    assert svc.get_transfer(uid, job.id).status == "awaiting_payment"
    assert not any(mailcheck.snapshot(server.port, "dst", DST_PW).values())  # nothing copied
    with pytest.raises(PaymentRequired, match=r"balance \(0\) does not cover the price \(500\)"):
        svc.billing.settle(uid, job.id)
    charge = svc.billing.charge_of(uid, job.id)
    assert charge is not None and (charge["price"], charge["state"]) == (500, "awaiting_payment")
    # An operator grants credits; the order is paid from them.
    assert svc.billing.grant(uid, 700, "ops@example.org", "welcome", key="k1")
    assert not svc.billing.grant(uid, 700, "ops@example.org", "welcome", key="k1")  # once
    assert balance(svc, uid) == 700
    assert svc.billing.settle(uid, job.id)
    view = wait_status(svc, uid, job.id)
    assert view.status == "done", view
    assert_exact(server, "src", SRC_PW, "dst", DST_PW)
    assert balance(svc, uid) == 200
    kinds = [
        (e["kind"], e["amount"], e["balance_after"]) for e in svc.billing.summary(uid)["entries"]
    ]
    assert kinds == [("spend", -500, 200), ("grant", 700, 700)]


def test_an_order_covered_by_credits_runs_at_once(make_service, server):
    svc = make_service(ca_file=str(server.ca_file), **BILLING)
    uid = svc.create_user(OWNER, "long enough pass")
    svc.billing.grant(uid, 500, "ops@example.org", "", key="g")
    q = quote(svc, uid, server)
    assert (q.credits_used, q.to_pay) == (500, 0)
    job = svc.create_transfer(
        uid, account(server, "src", SRC_PW), account(server, "dst", DST_PW), quote_id=q.id
    )
    assert job.status == "queued"
    assert balance(svc, uid) == 0


def test_concurrent_orders_on_one_balance_never_overspend(make_service, dovecot_factory):
    """Eight orders at once, each of 500, on a balance of 1500: exactly three are paid
    from it (queued) and five wait; the balance ends at 0, never below."""
    users = {f"s{i}": SRC_PW for i in range(8)} | {f"d{i}": DST_PW for i in range(8)}
    srv = dovecot_factory(users=users)
    for i in range(8):
        srv.deliver(f"s{i}", "INBOX", make_message(i, size=500))
    svc = make_service(ca_file=str(srv.ca_file), customer_max_pending=0, **BILLING)
    uid = svc.create_user(OWNER, "long enough pass")
    svc.billing.grant(uid, 1500, "ops@example.org", "", key="g")
    quotes = [quote(svc, uid, srv, f"s{i}") for i in range(8)]
    dests = [account(srv, f"d{i}", DST_PW) for i in range(8)]
    results: list[str] = []
    gate = threading.Barrier(8)

    def order(i: int) -> None:
        gate.wait()
        view = svc.create_transfer(
            uid, account(srv, f"s{i}", SRC_PW), dests[i], quote_id=quotes[i].id
        )
        results.append(view.status)

    threads = [threading.Thread(target=order, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["awaiting_payment"] * 5 + ["queued"] * 3
    assert balance(svc, uid) == 0
    with svc.db.read() as s:
        spends = s.scalars(select(LedgerEntry.amount).where(LedgerEntry.kind == "spend")).all()
    assert sorted(spends) == [-500, -500, -500]


def test_a_failure_on_our_side_refunds_the_run_once(make_service, server):
    svc = make_service(ca_file=str(server.ca_file), **BILLING)  # not started: we end it
    uid = svc.create_user(OWNER, "long enough pass")
    svc.billing.grant(uid, 1000, "ops@example.org", "", key="g")
    src, dst = account(server, "src", SRC_PW), account(server, "dst", DST_PW)
    job = svc.create_transfer(uid, src, dst, quote_id=quote(svc, uid, server).id)
    assert job.status == "queued" and balance(svc, uid) == 500
    store = SqlJobStore(svc.settings, svc.db, svc.box)

    def fail(kind: str) -> None:
        claim = store.claim(job.id, "test-host", 60, 3)
        assert claim is not None and hasattr(claim, "token"), claim
        store.finish(
            job.id,
            "test-host",
            claim.token,
            "failed",
            "it broke",
            lambda p: {**p, "failure": {"kind": kind, "side": None}},
            None,
        )

    fail("auth")  # the customer's server refused the password: not ours, no refund
    assert balance(svc, uid) == 500
    svc.rerun_transfer(uid, job.id)  # run 2: free (paid within the days)
    assert balance(svc, uid) == 500
    # Run 2 was free: a failure of ours gives back nothing more than was paid for it.
    fail("internal")
    assert balance(svc, uid) == 500
    # Past the free days, run 3 is charged again; our failure refunds it, once.
    svc.clock = lambda: time.time() + 31 * 86400
    view = svc.rerun_transfer(uid, job.id)
    assert view.status == "queued" and balance(svc, uid) == 0
    fail("internal")
    assert balance(svc, uid) == 500
    with svc.db.session() as s:  # the same end seen twice (a retried write): once
        from yippiemove.service.refunds import refund_failed_run

        refund_failed_run(s, s.get(Job, job.id))
    assert balance(svc, uid) == 500
    entries = svc.billing.summary(uid)["entries"]
    assert [e["kind"] for e in entries] == ["refund", "spend", "spend", "grant"]


def test_cancelling_a_waiting_order_spends_nothing_and_wipes_its_passwords(make_service, server):
    svc = make_service(ca_file=str(server.ca_file), **BILLING)
    uid = svc.create_user(OWNER, "long enough pass")
    job = svc.create_transfer(
        uid,
        account(server, "src", SRC_PW),
        account(server, "dst", DST_PW),
        quote_id=quote(svc, uid, server).id,
    )
    view = svc.cancel_transfer(uid, job.id)
    assert view.status == "cancelled"
    with svc.db.read() as s:
        row = s.get(Job, job.id)
        assert row is not None and row.credentials_expires is not None
    with pytest.raises(Conflict, match="not waiting for a payment"):
        svc.billing.settle(uid, job.id)
    assert balance(svc, uid) == 0
    with svc.db.read() as s:
        assert ledger.entries(s, svc.billing.account_of(s, uid)) == []


def test_an_order_never_paid_for_is_cancelled_and_its_passwords_deleted(make_service, server):
    svc = make_service(ca_file=str(server.ca_file), **BILLING)
    uid = svc.create_user(OWNER, "long enough pass")
    job = svc.create_transfer(
        uid,
        account(server, "src", SRC_PW),
        account(server, "dst", DST_PW),
        quote_id=quote(svc, uid, server).id,
    )
    svc.cleanup_credentials()  # a day later: still waiting, still its passwords
    with svc.db.read() as s:
        row = s.get(Job, job.id)
        assert row is not None and row.credentials is not None
    assert svc.get_transfer(uid, job.id).status == "awaiting_payment"
    svc.cleanup_credentials(now=time.time() + 8 * 86400)
    view = svc.get_transfer(uid, job.id)
    assert view.status == "cancelled" and "never paid for" in (view.error or "")
    with svc.db.read() as s:
        row = s.get(Job, job.id)
        assert row is not None and row.credentials is None


def test_a_companys_members_share_one_balance_set_up_from_the_command_line(
    make_service, server, tmp_path, monkeypatch
):
    from click.testing import CliRunner

    from yippiemove.cli import main

    svc = make_service(ca_file=str(server.ca_file), **BILLING)
    ann = svc.create_user("ann@corp.example", "long enough pass")
    bob = svc.create_user("bob@corp.example", "long enough pass")
    data = str(svc.settings.data_dir)
    for name, value in BILLING.items():
        monkeypatch.setenv("YIPPIEMOVE_" + name.upper(), str(value))
    monkeypatch.setenv("YIPPIEMOVE_EGRESS_ALLOW", "127.0.0.0/8")
    runner = CliRunner()

    def cli(*args: str) -> str:
        r = runner.invoke(main, [*args, "--data-dir", data], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return r.output

    out = cli("billing", "company-create", "Corp Ltd")
    account_id = out.strip().rsplit(" ", 1)[1]
    cli("billing", "company-add", account_id, "ann@corp.example")
    cli("billing", "company-add", account_id, "bob@corp.example")
    assert "granted; balance 1000" in cli(
        "billing", "grant", "ann@corp.example", "1000", "--key", "k"
    )
    assert "already granted" in cli("billing", "grant", "bob@corp.example", "1000", "--key", "k")
    assert cli("billing", "balance", "bob@corp.example").strip() == "1000 usd (company Corp Ltd)"
    # Bob's order is paid from the company's credits that Ann's grant put there.
    job = svc.create_transfer(
        bob,
        account(server, "src", SRC_PW),
        account(server, "dst", DST_PW),
        quote_id=quote(svc, bob, server).id,
    )
    assert job.status == "queued"
    assert balance(svc, ann) == balance(svc, bob) == 500
    assert svc.billing.summary(ann)["company"] == "Corp Ltd"
    # A customer outside the company sees none of it.
    eve = svc.create_user("eve@example.org", "long enough pass")
    assert balance(svc, eve) == 0 and svc.billing.summary(eve)["entries"] == []


def test_deleting_a_member_keeps_the_companys_ledger_and_their_own_goes(make_service, server):
    svc = make_service(ca_file=str(server.ca_file), **BILLING)
    ann = svc.create_user("ann@corp.example", "long enough pass")
    bob = svc.create_user("bob@corp.example", "long enough pass")
    company = svc.billing.create_company("Corp Ltd")
    svc.billing.add_member(company, ann)
    svc.billing.add_member(company, bob)
    svc.billing.grant(ann, 1000, "ops", "", key="c")
    svc.create_transfer(
        bob,
        account(server, "src", SRC_PW),
        account(server, "dst", DST_PW),
        quote_id=quote(svc, bob, server).id,
    )
    assert balance(svc, ann) == 500
    solo = svc.create_user("solo@example.org", "long enough pass")
    svc.billing.grant(solo, 300, "ops", "", key="s")
    svc.cancel_transfer(bob, svc.list_transfers(bob)[0].id)
    svc.delete_account(bob, "long enough pass")
    svc.delete_account(solo, "long enough pass")
    # Bob's spend stays in the company's ledger: the balance Ann sees does not change.
    assert balance(svc, ann) == 500
    assert [e["kind"] for e in svc.billing.summary(ann)["entries"]] == ["spend", "grant"]
    with svc.db.read() as s:  # solo's own account went with its entries
        assert s.scalar(select(LedgerEntry.id).where(LedgerEntry.amount == 300)) is None


def test_a_batch_is_priced_by_its_pre_flight_and_waits_for_what_credits_do_not_cover(
    make_service, server
):
    """Issue 20: the pre-flight measures each line's source and prices it; starting
    orders every good line with its quote: what the credits cover runs, the rest waits
    until paid (here from credits granted later, for the whole batch at once)."""
    svc = make_service(ca_file=str(server.ca_file), **BILLING)
    svc.start(0)  # pre-flights in the background; no worker runs the queued ones
    uid = svc.create_user(OWNER, "long enough pass")
    svc.billing.grant(uid, 600, "ops@example.org", "", key="g")
    rows = [
        (1, account(server, "src", SRC_PW), account(server, "dst", DST_PW)),
        (2, account(server, "src2", SRC_PW), account(server, "dst2", DST_PW)),
        (3, account(server, "src", "wrong password"), account(server, "dst2", DST_PW)),
    ]
    bid = svc.create_batch(uid, rows, autostart=False)["id"]
    svc.wait_preflights(60)
    view = svc.get_batch(uid, bid)
    prices = {v["line"]: v["price"] for v in view["lines"]}
    assert prices == {1: 500, 2: 500, 3: None}, view["lines"]
    assert view["price"] == {"total": 1000, "currency": "usd"}
    view = svc.start_batch(uid, bid)
    status = {v["line"]: v["status"] for v in view["lines"]}
    assert status == {1: "queued", 2: "awaiting_payment", 3: None}, status
    assert view["totals"]["awaiting_payment"] == 1 and view["state"] == "running"
    assert balance(svc, uid) == 100
    out = svc.billing.settle_batch(uid, bid)  # 100 left: nothing more covered yet
    assert out["settled"] == [] and len(out["waiting"]) == 1 and out["balance"] == 100
    svc.billing.grant(uid, 400, "ops@example.org", "", key="g2")
    out = svc.billing.settle_batch(uid, bid)
    assert len(out["settled"]) == 1 and out["waiting"] == [] and out["balance"] == 0
    view = svc.get_batch(uid, bid)
    assert {v["line"]: v["status"] for v in view["lines"]}[2] == "queued"
    with pytest.raises(Conflict, match="no transfer of this batch is waiting"):
        svc.billing.settle_batch(uid, bid)
    other = svc.create_user("other@example.org", "long enough pass")
    with pytest.raises(NotFound):
        svc.billing.settle_batch(other, bid)


def test_an_operators_requeue_is_not_charged_to_the_customer(make_service, server):
    svc = make_service(ca_file=str(server.ca_file), **BILLING)
    uid = svc.create_user(OWNER, "long enough pass")
    ops = svc.create_user("ops@example.org", "long enough pass")
    svc.set_role("ops@example.org", "operator")
    svc.billing.grant(uid, 500, "ops@example.org", "", key="g")
    job = svc.create_transfer(
        uid,
        account(server, "src", SRC_PW),
        account(server, "dst", DST_PW),
        quote_id=quote(svc, uid, server).id,
    )
    svc.cancel_transfer(uid, job.id)
    svc.clock = lambda: time.time() + 60 * 86400  # long past the free re-run days
    out = svc.op_requeue(ops, job.id)
    assert out["status"] == "queued", out
    assert balance(svc, uid) == 0  # only the order's own price was spent
    charge = svc.billing.charge_of(uid, job.id)
    assert charge is not None and (charge["run"], charge["state"]) == (2, "free")
