"""Readable reports and undo over the real Service, a real job process and a real Dovecot
(issue 17): the report page, its CSV, the printable receipt and the REST answers, then
undo's preview and undo from the job page and from the API, judged by imaplib."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import UTC, datetime

from fastapi.testclient import TestClient

from tests import mailcheck
from tests.svckit import DST_PW, SRC_PW, account, make_service, wait_status
from tests.transfer.test_move import make_message
from tests.web.conftest import Browser
from yippiemove.web.app import create_app

__all__ = ["make_service"]  # (the fixture)

API = "/api/v1"
OWNER = "owner@example.org"
OWNER_PW = "long enough pass"


def _job(make_service, dovecot_factory):  # type: ignore[no-untyped-def]
    """A done job that copied src into a destination that already had mail."""
    server = dovecot_factory(users={"src": SRC_PW, "dst": DST_PW})
    when = datetime(2012, 3, 4, tzinfo=UTC)
    server.deliver_many("src", "INBOX", [make_message(i) for i in range(1, 8)])
    server.deliver("src", "=SUM(A1)", make_message(50), (), when)
    server.deliver_many("src", "Archive/2019", [make_message(i, size=3000) for i in (8, 9, 10)])
    server.deliver("dst", "INBOX", make_message(3), (), when)  # already there
    server.deliver("dst", "INBOX", make_message(900, body=b"theirs"), ("\\Seen",), when)
    before = mailcheck.snapshot(server.port, "dst", DST_PW)
    svc = make_service(ca_file=str(server.ca_file))
    svc.start(1)
    uid = svc.create_user(OWNER, OWNER_PW)
    job = svc.create_transfer(uid, account(server, "src", SRC_PW), account(server, "dst", DST_PW))
    view = wait_status(svc, uid, job.id)
    assert view.status == "done", view
    return server, svc, uid, job.id, before


def _browser(svc) -> Browser:  # type: ignore[no-untyped-def]
    b = Browser(TestClient(create_app(svc)))
    b.get("/login")
    r = b.post("/login", {"email": OWNER, "password": OWNER_PW})
    assert r.status_code == 303, r.text
    return b


def test_report_page_csv_receipt_and_api(make_service, dovecot_factory):
    _server, svc, uid, jid, _before = _job(make_service, dovecot_factory)
    b = _browser(svc)
    job_page = b.get(f"/transfers/{jid}").text
    assert f"/transfers/{jid}/messages" in job_page and f"/transfers/{jid}/undo" in job_page

    page = b.get(f"/transfers/{jid}/messages")
    assert page.status_code == 200, page.text
    text = page.text
    assert "Every message was checked on the destination" in text
    assert text.count('data-outcome="copied"') == 10
    assert text.count('data-outcome="present"') == 1
    assert "Archive/2019" in text and "=SUM(A1)" in text
    assert SRC_PW not in text and DST_PW not in text
    only = b.get(f"/transfers/{jid}/messages?outcome=present").text
    assert only.count('data-outcome="present"') == 1 and 'data-outcome="copied"' not in only

    r = b.get(f"/transfers/{jid}/report.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 11
    assert Counter(x["outcome"] for x in rows) == {"copied": 10, "present": 1}
    # A cell a spreadsheet would run as a formula is defused.
    assert {x["folder"] for x in rows} == {"INBOX", "Archive/2019", "'=SUM(A1)"}
    inbox = [x for x in rows if x["folder"] == "INBOX"]
    assert [int(x["source_uid"]) for x in inbox] == list(range(1, 8))
    assert all(x["dest_uid"] for x in rows)
    assert "Hello" not in r.text  # never a message body

    receipt = b.get(f"/transfers/{jid}/receipt.html")
    assert receipt.status_code == 200 and "@media print" not in receipt.text  # (CSS file)
    assert "11 in 3 folders: 10 copied, 1 already there" in receipt.text
    assert b.get("/static/receipt.css").text.count("@media print") == 1

    token = svc.create_token(uid, "ci")
    h = {"Authorization": f"Bearer {token}"}
    api = b.client.get(f"{API}/transfers/{jid}/messages?offset=2&limit=3", headers=h)
    assert api.status_code == 200, api.text
    body = api.json()
    assert body["total"] == 11 and len(body["messages"]) == 3
    # Folders in name order ("=SUM(A1)", "Archive/2019", "INBOX"), then UIDs.
    assert [m["folder"] for m in body["messages"]] == ["Archive/2019"] * 2 + ["INBOX"]
    assert [m["source_uid"] for m in body["messages"]] == [2, 3, 1]
    assert body["counts"]["copied"] == 10
    csv_api = b.client.get(f"{API}/transfers/{jid}/messages?format=csv", headers=h)
    assert csv_api.status_code == 200 and csv_api.text == r.text
    other = svc.create_user("other@example.org", OWNER_PW)
    ho = {"Authorization": f"Bearer {svc.create_token(other, 'x')}"}
    assert b.client.get(f"{API}/transfers/{jid}/messages", headers=ho).status_code == 404


def test_undo_preview_then_undo_from_the_job_page(make_service, dovecot_factory):
    server, svc, uid, jid, before = _job(make_service, dovecot_factory)
    b = _browser(svc)
    after_job = mailcheck.snapshot(server.port, "dst", DST_PW)

    preview = b.get(f"/transfers/{jid}/undo")
    assert preview.status_code == 200, preview.text
    assert "exactly the 10 messages" in preview.text
    assert mailcheck.snapshot(server.port, "dst", DST_PW) == after_job  # nothing changed

    # Mail arrives on the destination after the job: it stays.
    c = mailcheck.connect(server.port, "dst", DST_PW)
    assert c.append("INBOX", None, None, make_message(901, body=b"later"))[0] == "OK"
    c.logout()
    later = mailcheck.snapshot(server.port, "dst", DST_PW)["INBOX"] - after_job["INBOX"]

    done = b.post(f"/transfers/{jid}/undo")
    assert done.status_code == 200, done.text
    assert "Undone: 10 messages removed" in done.text
    now = mailcheck.snapshot(server.port, "dst", DST_PW)
    assert now["INBOX"] == before["INBOX"] + later
    assert sum(now.get("Archive/2019", Counter()).values()) == 0
    assert sum(now.get("=SUM(A1)", Counter()).values()) == 0
    receipt = b.get(f"/transfers/{jid}/receipt.html").text
    assert "data-undone" in receipt

    # The API: nothing left to undo.
    h = {"Authorization": f"Bearer {svc.create_token(uid, 'ci')}"}
    r = b.client.get(f"{API}/transfers/{jid}/undo", headers=h)
    assert r.status_code == 200 and r.json()["to_remove"] == 0, r.text
    r = b.client.post(f"{API}/transfers/{jid}/undo", headers=h)
    assert r.status_code == 200 and r.json()["removed"] == 0, r.text

    # Without the stored password there is no undo: said plainly.
    svc.forget_credentials(uid, jid)
    r = b.client.get(f"{API}/transfers/{jid}/undo", headers=h)
    assert r.status_code == 409 and "passwords of this transfer are deleted" in r.text
