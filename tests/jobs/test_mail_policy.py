"""Issue 17's e-mail policy, through the real service (queue, supervisor, job processes),
a real Dovecot and a real SMTP sink (aiosmtpd):

- a run (or re-run) that ends within ``start_mail_after`` sends no start mail, only its
  end mail; one that lasts longer sends the start mail while it runs;
- the jobs of a batch send no mail of their own: one summary when the last one ends;
- numbers with thousands separators, times in the customer's time zone.
"""

from __future__ import annotations

import time

import pytest

from tests.svckit import (
    DST_PW,
    SRC_PW,
    account,
    big_mailbox,
    mailing_service,
    wait_progress,
    wait_status,
)
from tests.transfer.test_move import populate

OWNER = "owner@example.org"


@pytest.fixture
def server(dovecot_factory):
    return dovecot_factory(users={"src": SRC_PW, "dst": DST_PW, "d2": DST_PW, "d3": DST_PW})


def test_a_short_run_and_rerun_send_no_start_mail(make_service, server, smtp_sink):
    populate(server)
    svc = mailing_service(make_service, server, smtp_sink)
    svc.start(1)
    uid = svc.create_user(OWNER, "long enough pass")
    assert svc.set_timezone(uid, "Asia/Kolkata")
    job = svc.create_transfer(uid, account(server, "src", SRC_PW), account(server, "dst", DST_PW))
    view = wait_status(svc, uid, job.id)
    assert view.status == "done", view
    smtp_sink.wait_for(lambda m: "is complete" in m["Subject"])
    svc.rerun_transfer(uid, job.id)
    assert wait_status(svc, uid, job.id).status == "done"
    mails = smtp_sink.wait_for(lambda m: len(smtp_sink.messages) >= 2) and smtp_sink.messages
    time.sleep(0.5)  # nothing more comes
    assert [m["Subject"] for m in smtp_sink.messages].count(mails[0]["Subject"]) == 2
    assert not any("has started" in m["Subject"] for m in smtp_sink.messages)
    body = smtp_sink.messages[-1].get_content()
    assert "(Asia/Kolkata)" in body and "Finished: " in body


def test_a_run_longer_than_the_threshold_mails_its_start_while_it_runs(
    make_service, server, smtp_sink
):
    big_mailbox(server)  # ~90 MB through one connection: seconds
    svc = mailing_service(make_service, server, smtp_sink, start_mail_after=0.3, job_connections=1)
    svc.start(1)
    uid = svc.create_user(OWNER, "long enough pass")
    job = svc.create_transfer(uid, account(server, "src", SRC_PW), account(server, "dst", DST_PW))
    wait_progress(svc, uid, job.id, 0.01)
    started = smtp_sink.wait_for(lambda m: "has started" in m["Subject"])
    assert "(UTC)" in started.get_content()  # no time zone set: UTC, named
    view = wait_status(svc, uid, job.id, timeout=120)
    assert view.status == "done", view
    smtp_sink.wait_for(lambda m: "is complete" in m["Subject"])
    subjects = [m["Subject"] for m in smtp_sink.messages]
    assert len(subjects) == 2 and "has started" in subjects[0], subjects  # once, first
    assert view.finished - view.started > 0.3


def test_a_batch_sends_one_summary_when_its_last_job_ends(make_service, server, smtp_sink):
    big_mailbox(server, count=350)  # three times: over a thousand messages
    svc = mailing_service(make_service, server, smtp_sink)
    uid = svc.create_user(OWNER, "long enough pass")
    ids = []
    batch = None
    for dst in ("dst", "d2", "d3"):
        view = svc.create_transfer(
            uid, account(server, "src", SRC_PW), account(server, dst, DST_PW)
        )
        ids.append(view.id)
        batch = svc.tag_batch(uid, [view.id], batch)
    svc.start(2)
    for jid in ids:
        assert wait_status(svc, uid, jid).status == "done"
    summary = smtp_sink.wait_for(lambda m: "batch" in m["Subject"])
    time.sleep(1.0)  # no other mail follows
    assert len(smtp_sink.messages) == 1, [m["Subject"] for m in smtp_sink.messages]
    assert summary["Subject"] == "Your batch of 3 mailbox transfers has ended"
    body = summary.get_content()
    assert "3 done" in body and all(f"/transfers/{jid}" in body for jid in ids)
    total = sum(svc.get_transfer(uid, j).progress["messages_done"] for j in ids)
    assert total == 1050 and f"Messages copied: {total:,}," in body  # thousands separator
