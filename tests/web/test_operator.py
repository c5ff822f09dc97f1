"""The operator's console over the REAL service (issue 17): pages /operator and REST
/api/v1/operator.  A customer (or nobody) gets the 404 of a missing path everywhere;
an operator sees every customer's jobs, reads reports (never a credential), cancels,
requeues, suspends and unsuspends, and each action is in the audit log.  A suspended
customer's log-in is refused with a clear message and their token is 403 in the one
error shape."""

from __future__ import annotations

import html
import re
from typing import Any

from fastapi.testclient import TestClient

from tests.svckit import DST_PW, SRC_PW, make_service
from tests.web.conftest import Browser
from tests.web.test_reports import OWNER, OWNER_PW, _job
from yippiemove.service.core import Account, Service
from yippiemove.web.app import create_app

__all__ = ["make_service"]  # (the fixture)

API = "/api/v1"
OP = "op@example.org"
OP_PW = "operator password"


def _setup(svc: Service) -> tuple[TestClient, int, str]:
    svc.create_user(OP, OP_PW)
    op = svc.set_role(OP, "operator")
    client = TestClient(create_app(svc), raise_server_exceptions=False)
    return client, op, svc.create_token(op, "console")


def _login(client: TestClient, email: str, password: str) -> tuple[Browser, Any]:
    b = Browser(client)
    b.get("/login")
    return b, b.post("/login", {"email": email, "password": password})


def _operator_ops(client: TestClient) -> list[tuple[str, str]]:
    doc = client.get("/openapi.json").json()
    return [
        (m.upper(), path)
        for path, ops in doc["paths"].items()
        if path.startswith(API + "/operator")
        for m in ops
    ]


def _url(path: str, job_id: str, user_id: int) -> str:
    return path.replace("{job_id}", job_id).replace("{user_id}", str(user_id))


def test_a_customer_finds_no_console_anywhere(make_service: Any) -> None:
    svc = make_service()
    client, op, _op_token = _setup(svc)
    cust = svc.create_user("cust@example.org", "customer password")
    token = svc.create_token(cust, "mine")
    job = svc.create_transfer(
        cust,
        Account("127.0.0.1", 1143, "starttls", "a", SRC_PW),
        Account("127.0.0.1", 1143, "starttls", "b", DST_PW),
    )
    ops = _operator_ops(client)
    assert len(ops) == 12  # issue 20: grant credits
    missing = client.get(f"{API}/no-such-thing", headers={"Authorization": f"Bearer {token}"})
    for method, path in ops:
        url = _url(path, job.id, cust)
        body = {"reason": "x"} if method == "POST" else None
        r = client.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"})
        assert (r.status_code, r.json()) == (404, missing.json()), (method, path)
        anon = client.request(method, url, json=body)
        assert anon.status_code == 401, (method, path)
    assert svc.get_transfer(cust, job.id).status == "queued"  # nothing happened

    b, r = _login(client, "cust@example.org", "customer password")
    assert r.status_code == 303
    nothing = b.get("/no-such-page")
    anon = Browser(TestClient(create_app(svc)))
    for who in (b, anon):
        for path in (
            "/operator",
            "/operator/audit",
            f"/operator/customers/{cust}",
            "/operator/customers/abc",
            f"/operator/transfers/{job.id}",
        ):
            r = who.get(path, follow_redirects=False)
            assert (r.status_code, r.text) == (404, nothing.text), path
        for path in (
            f"/operator/customers/{cust}/suspend",
            f"/operator/customers/{op}/unsuspend",
            f"/operator/transfers/{job.id}/cancel",
            f"/operator/transfers/{job.id}/requeue",
        ):  # 404 before the form's CSRF token is even looked at
            for csrf in (True, False):
                r = who.post(path, {"reason": "x"}, csrf=csrf)
                assert r.status_code == 404, path
    assert svc.get_transfer(cust, job.id).status == "queued"
    assert not svc.op_customer(op, cust)["suspended"]
    assert "/operator" not in b.get("/transfers").text  # no link to it either


def test_the_operator_sees_all_acts_and_every_action_is_audited(
    make_service: Any, dovecot_factory: Any
) -> None:
    _server, svc, owner, done_id, _before = _job(make_service, dovecot_factory)
    svc.stop(timeout=15)  # no worker now: the next job stays queued
    client, op, op_token = _setup(svc)
    auth = {"Authorization": f"Bearer {op_token}"}
    other = svc.create_user("other@example.org", "other password!")
    other_token = svc.create_token(other, "theirs")
    queued = svc.create_transfer(
        other,
        Account("127.0.0.1", 1, "starttls", "x", SRC_PW),
        Account("127.0.0.1", 1, "starttls", "y", DST_PW),
    )
    texts: list[str] = []

    def get(url: str, **kw: Any) -> Any:
        r = client.get(url, headers=auth, **kw)
        assert r.status_code == 200, (url, r.text)
        texts.append(r.text)
        return r.json()

    customers = get(f"{API}/operator/customers")["customers"]
    assert [c["email"] for c in customers] == [OP, "other@example.org", OWNER]
    assert get(f"{API}/operator/customers", params={"q": "OTHER"})["customers"][0]["id"] == other
    jobs = get(f"{API}/operator/transfers")["transfers"]
    assert {j["id"] for j in jobs} == {done_id, queued.id}
    assert [
        j["id"] for j in get(f"{API}/operator/transfers", params={"status": "done"})["transfers"]
    ] == [done_id]
    detail = get(f"{API}/operator/customers/{owner}")
    assert [j["id"] for j in detail["transfers"]] == [done_id]
    queue = get(f"{API}/operator/queue")
    assert (queue["queued"], queue["running"], queue["held"]) == (1, 0, 0)
    assert queue["local"] == {
        "host": svc.settings.host_name,
        "workers": 1,
        "consuming": False,
        "draining": False,
    }
    assert [(h["name"], h["state"]) for h in queue["hosts"]] == [(svc.settings.host_name, "gone")]
    report = get(f"{API}/operator/transfers/{done_id}/report")
    assert report["transfer"]["id"] == done_id and report["report"] is not None
    assert len(report["messages"]["messages"]) == 11

    # Cancel and requeue any customer's job.
    r = client.post(
        f"{API}/operator/transfers/{queued.id}/cancel", json={"reason": "r1"}, headers=auth
    )
    assert (r.status_code, r.json()["status"]) == (200, "cancelled")
    again = client.post(f"{API}/operator/transfers/{queued.id}/cancel", headers=auth)
    assert again.status_code == 409 and set(again.json()) >= {"code", "message", "error"}
    r = client.post(f"{API}/operator/transfers/{queued.id}/requeue", headers=auth)
    assert (r.status_code, r.json()["status"], r.json()["runs"]) == (200, "queued", 2)

    # Suspend: log-in refused saying so, the token 403 in the one error shape.
    r = client.post(
        f"{API}/operator/customers/{other}/suspend", json={"reason": "abuse"}, headers=auth
    )
    assert r.status_code == 200 and r.json()["suspended"] is True, r.text
    _b, r = _login(client, "other@example.org", "other password!")
    assert r.status_code == 403 and "this account is suspended" in r.text.lower()
    _b, r = _login(client, "other@example.org", "a wrong password")
    assert r.status_code == 400 and "suspended" not in r.text  # only for the password's owner
    r = client.get(f"{API}/transfers", headers={"Authorization": f"Bearer {other_token}"})
    assert r.status_code == 403
    body = r.json()
    assert body["code"] == "forbidden" and body["message"] == body["error"]
    assert "suspended" in body["message"]
    assert get(f"{API}/operator/transfers/{queued.id}")["held"] is True
    r = client.post(f"{API}/operator/customers/{other}/unsuspend", headers=auth)
    assert r.status_code == 200 and r.json()["suspended"] is False
    r = client.get(f"{API}/transfers", headers={"Authorization": f"Bearer {other_token}"})
    assert r.status_code == 200

    audit = get(f"{API}/operator/audit")
    actions = [(e["action"], e["target_id"]) for e in reversed(audit["entries"])]
    assert actions == [
        ("set_role", str(op)),
        ("read_report", done_id),
        ("cancel", queued.id),
        ("requeue", queued.id),
        ("suspend", str(other)),
        ("unsuspend", str(other)),
    ]
    assert all(e["operator_email"] == OP for e in audit["entries"][:-1])

    json_answers = len(texts)
    # The pages: the same, read-only report included.
    ob, r = _login(client, OP, OP_PW)
    assert r.status_code == 303
    for path in (
        "/operator",
        "/operator?q=other&status=queued",
        f"/operator/customers/{owner}",
        f"/operator/transfers/{done_id}",
        "/operator/audit",
    ):
        page = ob.get(path)
        assert page.status_code == 200, (path, page.text[:300])
        texts.append(page.text)
    assert 'data-outcome="copied"' in texts[-2] and "data-console-link" in texts[-1]
    r = ob.post(f"/operator/customers/{other}/suspend", {"reason": "again"})
    assert r.status_code == 303
    assert "suspended" in ob.get(r.headers["location"]).text.lower()
    assert ob.post(f"/operator/customers/{other}/unsuspend", {}).status_code == 303
    assert ob.post(f"/operator/transfers/{queued.id}/cancel", {}).status_code == 303
    assert svc.get_transfer(other, queued.id).status == "cancelled"
    assert ob.post(f"/operator/customers/{other}/suspend", {}, csrf=False).status_code == 403
    texts.append(ob.get("/operator/audit").text)
    # Never a credential, in any answer of the console; no password field in its JSON.
    for text in texts:
        assert SRC_PW not in text and DST_PW not in text and OWNER_PW not in text
    assert all('password"' not in t for t in texts[:json_answers])


def test_the_console_list_is_paged_with_the_customer_lists_keyset(make_service: Any) -> None:
    """Issue 18: the operator's list a page at a time (service/joblist.py's cursor), over
    the REST API and on the console page, filters kept across pages."""
    svc = make_service()
    client, op, op_token = _setup(svc)
    auth = {"Authorization": f"Bearer {op_token}"}
    custs = [svc.create_user(f"c{i}@example.org", "customer password") for i in range(2)]
    ids = [
        svc.create_transfer(
            custs[i % 2],
            Account("127.0.0.1", 1143, "starttls", f"s{i}", SRC_PW),
            Account("127.0.0.1", 1143, "starttls", f"d{i}", DST_PW),
        ).id
        for i in range(5)
    ]
    newest_first = ids[::-1]

    def walk(**params: Any) -> list[list[str]]:
        pages, cursor = [], None
        while True:
            q = {**params, **({"cursor": cursor} if cursor else {})}
            r = client.get(f"{API}/operator/transfers", params=q, headers=auth)
            assert r.status_code == 200, r.text
            pages.append([j["id"] for j in r.json()["transfers"]])
            cursor = r.json().get("next_cursor")
            if cursor is None:
                assert "next_cursor" not in r.json()  # absent on the last page
                return pages

    assert walk() == [newest_first]  # 500 by default: one page, as before
    assert walk(limit=2) == [newest_first[:2], newest_first[2:4], newest_first[4:]]
    mine = [j for j in newest_first if ids.index(j) % 2 == 1]
    assert walk(limit=1, user_id=custs[1]) == [[j] for j in mine]
    assert walk(limit=2, status="done") == [[]]
    r = client.get(f"{API}/operator/transfers", params={"cursor": "nonsense"}, headers=auth)
    assert r.status_code == 400 and r.json()["message"].startswith("cursor:")
    assert client.get(f"{API}/operator/transfers?limit=501", headers=auth).status_code == 422
    rows, nxt = svc.op_job_page(op, limit=3)
    assert [j["id"] for j in rows] == newest_first[:3] and nxt is not None
    assert [j["id"] for j in svc.op_job_page(op, cursor=nxt)[0]] == newest_first[3:]

    # The console page: 100 a page, "Older transfers" carries the cursor and the tab.
    import yippiemove.web.operator as console

    b, _r = _login(client, OP, OP_PW)
    old = console.JOBS_PAGE
    console.JOBS_PAGE = 2
    try:
        page = b.get("/operator?status=queued").text
        assert [j for j in newest_first if f'data-job="{j}"' in page] == newest_first[:2]
        older = re.search(r'href="([^"]+)" rel="next" data-older', page)
        assert older and "status=queued" in older.group(1) and "data-newest" not in page
        page = b.get(html.unescape(older.group(1))).text
        assert [j for j in newest_first if f'data-job="{j}"' in page] == newest_first[2:4]
        assert "data-newest" in page
        page = b.get("/operator?cursor=nonsense").text  # the first page again
        assert [j for j in newest_first if f'data-job="{j}"' in page] == newest_first[:2]
    finally:
        console.JOBS_PAGE = old
