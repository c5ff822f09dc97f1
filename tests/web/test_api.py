"""The REST API (/api/v1) over the FakeService: status codes, bodies, messages, isolation."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.web.fakes import FakeService
from yippiemove.web.schemas import error_body as error  # the one error shape (issue 17)

API = "/api/v1"


def account(user: str = "alice@old.example", host: str = "imap.old.example") -> dict[str, Any]:
    return {"host": host, "port": 993, "security": "tls", "username": user, "password": "s3cret!"}


def body(**over: Any) -> dict[str, Any]:
    b: dict[str, Any] = {
        "source": account(),
        "dest": account("alice@new.example", "imap.new.example"),
    }
    b.update(over)
    return b


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(fake: FakeService) -> dict[str, str]:
    a = fake.create_user("alice@example.org", "alice-password")
    b = fake.create_user("bob@example.org", "bob-password-1")
    return {"alice": fake.create_token(a, "ci"), "bob": fake.create_token(b, "ci")}


@pytest.fixture
def job(client: TestClient, tokens: dict[str, str]) -> str:
    r = client.post(f"{API}/transfers", json=body(), headers=auth(tokens["alice"]))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


# -- create -----------------------------------------------------------------------------


def test_create_returns_201_id_status_and_location(
    client: TestClient, tokens: dict[str, str], fake: FakeService
) -> None:
    r = client.post(
        f"{API}/transfers",
        json=body(folders={"include": ["INBOX"], "exclude": []}),
        headers=auth(tokens["alice"]),
    )
    assert r.status_code == 201
    data = r.json()
    assert set(data) == {"id", "status"}
    assert data["status"] == "queued"
    assert r.headers["location"] == f"{API}/transfers/{data['id']}"
    _uid, src, dst, folders = fake.created[-1]
    assert src.password == "s3cret!" and dst.host == "imap.new.example"
    assert folders == {"include": ["INBOX"], "exclude": []}
    assert "s3cret" not in r.text


def test_create_without_folders_passes_none(
    client: TestClient, tokens: dict[str, str], fake: FakeService
) -> None:
    r = client.post(f"{API}/transfers", json=body(), headers=auth(tokens["alice"]))
    assert r.status_code == 201
    assert fake.created[-1][3] is None


@pytest.mark.parametrize(
    ("mutate", "status", "needle"),
    [
        (lambda b: b["source"].update(port=70000), 422, "source.port: must be 1-65535"),
        (lambda b: b["source"].update(port=0), 422, "source.port: must be 1-65535"),
        (lambda b: b["dest"].update(port="abc"), 422, "dest.port: must be an integer"),
        (lambda b: b["dest"].update(security="ssl"), 422, "dest.security: must be one of"),
        (lambda b: b["source"].pop("host"), 422, "source.host: is required"),
        (lambda b: b["source"].update(host=""), 422, "source.host"),
        (lambda b: b["source"].update(host="imap://x"), 422, "source.host: must be a host"),
        (lambda b: b["dest"].update(username=""), 422, "dest.username: must not be empty"),
        (lambda b: b["dest"].pop("password"), 422, "dest.password: is required"),
        (lambda b: b["source"].update(user="typo"), 422, "source.user: unknown field"),
        (lambda b: b.pop("dest"), 422, "dest: is required"),
        (lambda b: b.update(source="imap.example.org"), 422, "source: must be an object"),
        (lambda b: b.update(folders={"include": "INBOX"}), 422, "folders.include: must be a list"),
        (lambda b: b.update(folders={"only": ["x"]}), 422, "folders.only: unknown field"),
        (lambda b: b.update(extra=1), 422, "extra: unknown field"),
    ],
)
def test_create_validation_names_the_field(
    client: TestClient, tokens: dict[str, str], mutate: Any, status: int, needle: str
) -> None:
    b = body()
    mutate(b)
    r = client.post(f"{API}/transfers", json=b, headers=auth(tokens["alice"]))
    assert r.status_code == status, r.text
    data = r.json()
    assert needle in data["error"], data
    assert "s3cret" not in r.text  # no echo of the input's passwords
    assert isinstance(data["errors"], list) and data["errors"][0]["field"]


def test_service_policy_errors_are_400_with_the_services_words(
    client: TestClient, tokens: dict[str, str]
) -> None:
    b = body()
    b["dest"]["security"] = "none"
    r = client.post(f"{API}/transfers", json=b, headers=auth(tokens["alice"]))
    assert r.status_code == 400
    assert r.json() == error(400, "dest.security: 'none' is only allowed for loopback hosts")


@pytest.mark.parametrize(
    ("raw", "ctype", "needle"),
    [
        (b"{not json", "application/json", "not valid JSON"),
        (b"", "application/json", "request body"),
        (b"[1, 2]", "application/json", "JSON object"),
        (b"null", "application/json", "request body"),
        (b'"text"', "application/json", "JSON object"),
        (b"\xff\xfe\x00", "application/json", ""),
        (b"source=x", "application/x-www-form-urlencoded", ""),
        (b"{}", "text/plain", ""),
        (b'{"source": {"host": "a", "port": 1e400}}', "application/json", ""),
    ],
)
def test_bad_bodies_are_4xx_json_never_500(
    client: TestClient, tokens: dict[str, str], raw: bytes, ctype: str, needle: str
) -> None:
    r = client.post(
        f"{API}/transfers",
        content=raw,
        headers={**auth(tokens["alice"]), "Content-Type": ctype},
    )
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert needle in r.json()["error"]


def test_huge_body_is_413(client: TestClient, tokens: dict[str, str]) -> None:
    b = body(folders={"include": ["x" * 900] * 400, "exclude": []})
    r = client.post(f"{API}/transfers", json=b, headers=auth(tokens["alice"]))
    assert r.status_code == 413
    assert "too large" in r.json()["error"]


# -- auth -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic YWxpY2U6cHc="},
        {"Authorization": "bearer-but-not"},
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/transfers"),
        ("POST", "/transfers"),
        ("GET", "/transfers/abc"),
        ("POST", "/transfers/abc/cancel"),
        ("POST", "/transfers/abc/rerun"),
        ("GET", "/transfers/abc/report"),
        ("GET", "/transfers/abc/receipt"),
    ],
)
def test_every_route_needs_a_valid_token(
    client: TestClient, headers: dict[str, str], method: str, path: str
) -> None:
    r = client.request(method, API + path, headers=headers, json=body())
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "token" in r.json()["error"]


def test_revoked_token_is_refused(
    client: TestClient, fake: FakeService, tokens: dict[str, str]
) -> None:
    uid = fake.user_for_token(tokens["alice"])
    assert uid is not None
    (tid,) = [t["id"] for t in fake.list_tokens(uid)]
    fake.revoke_token(uid, tid)
    r = client.get(f"{API}/transfers", headers=auth(tokens["alice"]))
    assert r.status_code == 401
    assert "revoked" in r.json()["error"]


def test_session_cookie_is_not_api_auth(client: TestClient, app: Any) -> None:
    from tests.web.conftest import new_browser

    b = new_browser(app)
    b.signup("carol@example.org")
    r = b.client.get(f"{API}/transfers")
    assert r.status_code == 401


# -- read, list, cancel, rerun, report, receipt -----------------------------------------


def test_get_shows_status_progress_and_never_the_password(
    client: TestClient, tokens: dict[str, str], job: str, fake: FakeService
) -> None:
    fake.advance(job, 0.5)
    r = client.get(f"{API}/transfers/{job}", headers=auth(tokens["alice"]))
    assert r.status_code == 200
    data = r.json()
    assert data["id"] == job and data["status"] == "running"
    assert data["source"] == {
        "host": "imap.old.example",
        "port": 993,
        "security": "tls",
        "username": "alice@old.example",
    }
    p = data["progress"]
    assert 0 < p["messages_done"] < p["messages_total"]
    assert p["rate_history"] and p["per_folder"]
    assert "password" not in r.text and "s3cret" not in r.text


def test_list_and_status_filter(
    client: TestClient, tokens: dict[str, str], fake: FakeService
) -> None:
    ids = []
    for _ in range(3):
        r = client.post(f"{API}/transfers", json=body(), headers=auth(tokens["alice"]))
        ids.append(r.json()["id"])
    fake.finish(ids[0])
    fake.fail(ids[1], "boom")
    h = auth(tokens["alice"])
    all_ = client.get(f"{API}/transfers", headers=h).json()["transfers"]
    assert {j["id"] for j in all_} == set(ids)
    assert [
        j["id"] for j in client.get(f"{API}/transfers?status=done", headers=h).json()["transfers"]
    ] == [ids[0]]
    assert [
        j["id"] for j in client.get(f"{API}/transfers?status=failed", headers=h).json()["transfers"]
    ] == [ids[1]]
    assert [
        j["id"] for j in client.get(f"{API}/transfers?status=queued", headers=h).json()["transfers"]
    ] == [ids[2]]
    r = client.get(f"{API}/transfers?status=bogus", headers=h)
    assert r.status_code == 422
    assert r.json()["error"].startswith("status: must be one of")
    assert "s3cret" not in json.dumps(all_)


def test_cancel_then_conflict(client: TestClient, tokens: dict[str, str], job: str) -> None:
    h = auth(tokens["alice"])
    r = client.post(f"{API}/transfers/{job}/cancel", headers=h)
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled"
    r = client.post(f"{API}/transfers/{job}/cancel", headers=h)
    assert r.status_code == 409
    assert "already cancelled" in r.json()["error"]


def test_rerun(client: TestClient, tokens: dict[str, str], job: str, fake: FakeService) -> None:
    h = auth(tokens["alice"])
    r = client.post(f"{API}/transfers/{job}/rerun", headers=h)
    assert r.status_code == 409 and "still running" in r.json()["error"]
    fake.finish(job)
    r = client.post(f"{API}/transfers/{job}/rerun", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "queued"
    fake.finish(job)
    fake.drop_credentials(job)
    r = client.post(f"{API}/transfers/{job}/rerun", headers=h)
    assert r.status_code == 409 and "passwords" in r.json()["error"]


def test_report(client: TestClient, tokens: dict[str, str], job: str, fake: FakeService) -> None:
    h = auth(tokens["alice"])
    r = client.get(f"{API}/transfers/{job}/report", headers=h)
    assert r.status_code == 404
    assert r.json() == error(404, "no report yet: the transfer has not run")
    fake.add_failure(job, "INBOX", 7, "too big")
    fake.finish(job)
    r = client.get(f"{API}/transfers/{job}/report", headers=h)
    assert r.status_code == 200
    rep = r.json()
    assert rep["totals"]["failed"] == 1
    assert rep["failures"][0]["reason"] == "too big"


def test_receipt_is_a_consistent_sqlite_copy(
    client: TestClient, tokens: dict[str, str], job: str, fake: FakeService, tmp_path: Any
) -> None:
    h = auth(tokens["alice"])
    r = client.get(f"{API}/transfers/{job}/receipt", headers=h)
    assert r.status_code == 404
    assert "not run" in r.json()["error"]
    fake.finish(job)
    # A live WAL-mode database: the copy must contain what is only in the WAL so far.
    path = fake.state_file(fake.jobs[job].user_id, job)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE messages (uid INTEGER)")
    con.execute("INSERT INTO messages VALUES (42)")
    con.commit()
    try:
        r = client.get(f"{API}/transfers/{job}/receipt", headers=h)
    finally:
        con.close()
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.sqlite3"
    assert f"yippiemove-{job}-receipt.sqlite" in r.headers["content-disposition"]
    assert r.content.startswith(b"SQLite format 3\x00")
    out = tmp_path / "receipt.sqlite"
    out.write_bytes(r.content)
    got = sqlite3.connect(out)
    assert got.execute("SELECT uid FROM messages").fetchall() == [(42,)]
    got.close()


# -- isolation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", ""),
        ("POST", "/cancel"),
        ("POST", "/rerun"),
        ("GET", "/report"),
        ("GET", "/receipt"),
    ],
)
def test_another_customers_job_is_404_like_a_missing_one(
    client: TestClient,
    tokens: dict[str, str],
    job: str,
    fake: FakeService,
    method: str,
    suffix: str,
) -> None:
    fake.finish(job)  # every route would succeed for the owner
    bob = auth(tokens["bob"])
    theirs = client.request(method, f"{API}/transfers/{job}{suffix}", headers=bob)
    missing = client.request(method, f"{API}/transfers/0123456789abcdef{suffix}", headers=bob)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json().keys() == missing.json().keys() == {"code", "message", "error"}
    assert theirs.json() == missing.json() == error(404, "no such transfer")
    assert fake.jobs[job].status == "done"  # bob's cancel/rerun changed nothing
    assert client.get(f"{API}/transfers", headers=bob).json() == {"transfers": []}
    owner = client.request(method, f"{API}/transfers/{job}{suffix}", headers=auth(tokens["alice"]))
    assert owner.status_code == (409 if suffix == "/cancel" else 200)  # cancel: already done


@pytest.mark.parametrize("bad", ["..", "a" * 200, "x%00y", "%2e%2e%2fetc", "ünïcode", "a b"])
def test_strange_ids_are_404(client: TestClient, tokens: dict[str, str], bad: str) -> None:
    r = client.get(f"{API}/transfers/{bad}", headers=auth(tokens["alice"]))
    assert r.status_code == 404, r.text


# -- OpenAPI ----------------------------------------------------------------------------


def test_openapi_documents_the_api_and_only_the_api(client: TestClient) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    paths = set(doc["paths"])
    assert paths == {
        f"{API}/transfers",
        f"{API}/transfers/{{job_id}}",
        f"{API}/transfers/{{job_id}}/cancel",
        f"{API}/transfers/{{job_id}}/rerun",
        f"{API}/transfers/{{job_id}}/report",
        f"{API}/transfers/{{job_id}}/receipt",
        # issue 17: readable reports and undo
        f"{API}/transfers/{{job_id}}/messages",
        f"{API}/transfers/{{job_id}}/undo",
        # issue 16: domain-wide moves
        f"{API}/domain-credentials",
        f"{API}/domain-credentials/{{credential_id}}",
        f"{API}/domain-batches",
        # Issue 16: OAuth2 sign-ins for API clients, and forgetting a transfer's sign-in.
        f"{API}/oauth/{{provider}}/authorizations",
        f"{API}/oauth/authorizations/{{authorization_id}}",
        f"{API}/transfers/{{job_id}}/sign-in",
        # Issue 17: new passwords for a stopped transfer.
        f"{API}/transfers/{{job_id}}/credentials",
        # Issue 17 (parity): the web's checks, folder step and tokens over REST.
        f"{API}/account-checks",
        f"{API}/folder-listings",
        f"{API}/tokens",
        f"{API}/tokens/{{token_id}}",
        # Issue 17: staged moves (final pass now, cancel the schedule).
        f"{API}/transfers/{{job_id}}/final-pass",
        f"{API}/transfers/{{job_id}}/schedule",
        # Issue 17: the account lifecycle.
        f"{API}/account",
        f"{API}/account/password",
        f"{API}/account/email",
        f"{API}/password-resets",
        # Issue 17: batches as first-class objects.
        f"{API}/batches",
        f"{API}/batches/{{batch_id}}",
        f"{API}/batches/{{batch_id}}/results.csv",
        f"{API}/batches/{{batch_id}}/retry-failed",
        f"{API}/batches/{{batch_id}}/settle",  # issue 20
        f"{API}/batches/{{batch_id}}/start",
        # Issue 17: the operators' console (operators only).
        f"{API}/operator/audit",
        f"{API}/operator/customers",
        f"{API}/operator/customers/{{user_id}}",
        f"{API}/operator/customers/{{user_id}}/suspend",
        f"{API}/operator/customers/{{user_id}}/unsuspend",
        f"{API}/operator/queue",
        f"{API}/operator/transfers",
        f"{API}/operator/transfers/{{job_id}}",
        f"{API}/operator/transfers/{{job_id}}/cancel",
        f"{API}/operator/transfers/{{job_id}}/report",
        f"{API}/operator/transfers/{{job_id}}/requeue",
        # Issue 20: billing (quotes, payments, the ledger; operators grant credits).
        f"{API}/quotes",
        f"{API}/transfers/{{job_id}}/payment",
        f"{API}/transfers/{{job_id}}/settle",
        f"{API}/billing",
        f"{API}/billing/ledger.csv",
        f"{API}/credit-purchases",
        f"{API}/payments",
        f"{API}/payments/{{payment_id}}",
        f"{API}/payments/{{payment_id}}/receipt.pdf",
        f"{API}/operator/customers/{{user_id}}/credits",
    }
    assert "token" in doc["components"]["securitySchemes"]
    post = doc["paths"][f"{API}/transfers"]["post"]
    assert "201" in post["responses"] and "422" in post["responses"]
    account = doc["components"]["schemas"]["AccountIn"]
    assert account["properties"]["password"]["writeOnly"] is True
    out = doc["components"]["schemas"]["AccountOut"]
    assert "password" not in out["properties"]
    # Swagger UI at /docs (issue 17), its files from here: nothing from a CDN; no ReDoc.
    docs = client.get("/docs")
    assert docs.status_code == 200 and "://" not in docs.text.replace("http://www.w3", "")
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/redoc").status_code == 404
