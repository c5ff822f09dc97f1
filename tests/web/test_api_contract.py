"""The REST contract over the REAL Service (issue 14, attack class 7 "REST").

A hostile (or merely thorough) customer posts every documented transfer option: each
one round-trips through create, get, the customer's whole list and cancel, and none of
them makes an answer 500 (the response model once said every option is a list of
strings, so a ``since`` made the customer's whole list answer 500).  Ports and booleans
are strictly typed: ``"port": true`` and ``"port": "993"`` are 422 with a message.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from yippiemove.service.config import Settings
from yippiemove.service.core import Service
from yippiemove.web.app import create_app

API = "/api/v1"


@pytest.fixture
def real(tmp_path: Path) -> Iterator[Service]:
    """A real Service whose jobs are queued but not run (no workers started)."""
    svc = Service(Settings.load(tmp_path / "real", maintenance_interval=3600.0))
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def client(real: Service) -> Iterator[TestClient]:
    with TestClient(create_app(real), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def headers(real: Service) -> dict[str, str]:
    uid = real.create_user("contract@example.org", "contract password")
    return {"Authorization": f"Bearer {real.create_token(uid, 'ci')}"}


def account(user: str, port: Any = 1143) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "security": "starttls",
        "username": user,
        "password": "pw-123",
    }


#: Every documented option of ``folders`` (docs/web.md, docs/folders.md), set to a value
#: other than its default.
OPTIONS: dict[str, Any] = {
    "include": ["INBOX", "Archive/20*"],
    "exclude": ["Trash"],
    "rename": ["Sent Items=Sent"],
    "rename_regex": ["^Old/(.*)=Archive/\\1"],
    "under": "Imported",
    "under_inbox": True,
    "special": False,
    "since": "2020-01-31",
    "before": "2024-01-01",
    "larger": 1024,
    "smaller": 10_000_000,
}


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_every_option_round_trips_create_get_list_cancel(
    client: TestClient, headers: dict[str, str], option: str
) -> None:
    value = OPTIONS[option]
    folders = {option: value}
    if option == "under_inbox":  # documented as needing `under`
        folders["under"] = OPTIONS["under"]
    body = {
        "source": account("src@example.org"),
        "dest": account("dst@example.org"),
        "folders": folders,
    }
    r = client.post(f"{API}/transfers", json=body, headers=headers)
    assert r.status_code == 201, r.text
    job = r.json()["id"]

    got = client.get(f"{API}/transfers/{job}", headers=headers)
    assert got.status_code == 200, got.text
    assert got.json()["folders"][option] == value

    listed = client.get(f"{API}/transfers", headers=headers)
    assert listed.status_code == 200, listed.text
    (view,) = [t for t in listed.json()["transfers"] if t["id"] == job]
    assert view["folders"][option] == value

    cancelled = client.post(f"{API}/transfers/{job}/cancel", headers=headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["folders"][option] == value


def test_all_options_at_once_round_trip(client: TestClient, headers: dict[str, str]) -> None:
    body = {
        "source": account("src@example.org"),
        "dest": account("dst@example.org"),
        "folders": OPTIONS,
    }
    r = client.post(f"{API}/transfers", json=body, headers=headers)
    assert r.status_code == 201, r.text
    got = client.get(f"{API}/transfers/{r.json()['id']}", headers=headers).json()
    assert got["folders"] == OPTIONS


@pytest.mark.parametrize(
    ("where", "value", "needle"),
    [
        ("port", True, "source.port: must be an integer"),
        ("port", "993", "source.port: must be an integer"),
        ("port", 993.5, "source.port: must be an integer"),
        ("port", None, "source.port: must be an integer"),
        ("under_inbox", "yes", "folders.under_inbox: must be true or false"),
        ("under_inbox", 1, "folders.under_inbox: must be true or false"),
        ("special", "false", "folders.special: must be true or false"),
        ("larger", True, "folders.larger: must be an integer"),
        ("larger", "1024", "folders.larger: must be an integer"),
        ("since", "31.01.2020", "folders.since: must be a date as YYYY-MM-DD"),
        ("before", "2020-02-30", "folders.before: must be a date as YYYY-MM-DD"),
    ],
)
def test_ports_and_booleans_are_strictly_typed(
    client: TestClient, headers: dict[str, str], where: str, value: Any, needle: str
) -> None:
    body: dict[str, Any] = {
        "source": account("src@example.org"),
        "dest": account("dst@example.org"),
    }
    if where == "port":
        body["source"]["port"] = value
    else:
        body["folders"] = {where: value}
    r = client.post(f"{API}/transfers", json=body, headers=headers)
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"], r.json()


# -- schemathesis: the whole contract, responses included ------------------------------


def test_schemathesis_orders_and_reads_them_back_within_the_contract(tmp_path: Path) -> None:
    """Schema-valid orders from schemathesis (deterministic, a few hundred): every answer
    is a documented status with a body that matches the OpenAPI response schema, and each
    transfer it managed to order reads back (get, the whole list, cancel) within the
    schema too; never a 5xx."""
    # Plain-text IMAP allowed everywhere, so that most generated orders are taken (the
    # point is what the API answers about them afterwards).
    real = Service(
        Settings.load(tmp_path / "fuzz", maintenance_interval=3600.0, allow_insecure_hosts=True)
    )
    try:
        uid = real.create_user("fuzz@example.org", "fuzz password!")
        headers = {"Authorization": f"Bearer {real.create_token(uid, 'schemathesis')}"}
        _fuzz_orders(real, headers)
    finally:
        real.close()


def _fuzz_orders(real: Service, headers: dict[str, str]) -> None:
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(real))
    create = schema["/api/v1/transfers"]["POST"]
    listing = schema["/api/v1/transfers"]["GET"]
    get_one = schema["/api/v1/transfers/{job_id}"]["GET"]
    cancel = schema["/api/v1/transfers/{job_id}/cancel"]["POST"]
    statuses: list[int] = []
    jobs: set[str] = set()

    @given(case=create.as_strategy(generation_mode=GenerationMode.POSITIVE))
    @settings(
        max_examples=150,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def order(case: Any) -> None:
        r = case.call_and_validate(headers=headers, checks=checks)
        statuses.append(r.status_code)
        # A body that matches the schema is never a schema error (422); the service
        # may still refuse it by policy (400) or as a duplicate (409), and an
        # Idempotency-Key used before with another body is 422 (documented).
        assert r.status_code != 422 or "Idempotency-Key" in r.json()["error"], r.text
        if r.status_code != 201:
            return
        job = r.json()["id"]
        jobs.add(job)
        for op, params in ((get_one, {"job_id": job}), (cancel, {"job_id": job})):
            follow = op.Case(path_parameters=params)
            follow.call_and_validate(headers=headers, checks=checks)

    order()
    whole = listing.Case()
    r = whole.call_and_validate(headers=headers, checks=checks)
    assert {t["id"] for t in r.json()["transfers"]} == jobs
    # It did order transfers.  Issue 16: half the generated accounts are now OAuth2 sign-ins
    # ({"authorization": ID}) with ids that name nothing (400), hence 10, not 20.
    assert len(jobs) >= 10, sorted(set(statuses))


def test_a_port_is_a_json_schema_integer(client: TestClient, headers: dict[str, str]) -> None:
    """JSON Schema's ``integer`` includes 993.0: accepted (as 993), like the schema says."""
    body = {"source": account("src@example.org", 993.0), "dest": account("dst@example.org")}
    r = client.post(f"{API}/transfers", json=body, headers=headers)
    assert r.status_code == 201, r.text
    got = client.get(f"{API}/transfers/{r.json()['id']}", headers=headers).json()
    assert got["source"]["port"] == 993


# -- one error shape, as documented (issue 17) -------------------------------------------


def _error_validator(doc: dict[str, Any], ref: str) -> Any:
    import jsonschema_rs  # what schemathesis validates with

    return jsonschema_rs.Draft202012Validator({"$ref": ref, "components": doc["components"]})


def test_every_documented_error_is_one_shape_and_the_app_answers_it(
    client: TestClient, headers: dict[str, str]
) -> None:
    """Walks the OpenAPI document: every 4xx/5xx it documents is ``ErrorOut`` (or a
    schema that extends it: ``AlreadyActiveOut``, ``CredentialsRefusedOut``), and each operation's 401 (no token), 404 (unknown id)
    and 422 (invalid parameter or body) answers are documented and match it.  The report
    endpoint's 404/409/422 once answered ``{"error"}`` while the document said
    ``{"detail": [...]}`` for 422."""
    doc = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    schemas = doc["components"]["schemas"]
    seen: list[tuple[str, str, int]] = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            documented = op["responses"]
            for status, response in documented.items():
                if status[0] in "45":
                    schema = response["content"]["application/json"]["schema"]
                    name = schema["$ref"].rsplit("/", 1)[1]  # ErrorOut or one of its kind
                    required = set(schemas[name].get("required", []))
                    assert {"code", "message", "error"} <= required, (method, path, status)
            url = path
            for name in ("job_id", "credential_id", "authorization_id"):
                url = url.replace("{" + name + "}", "nonexistent0")
            url = url.replace("{provider}", "nonexistent0")
            body = {} if "requestBody" in op else None
            # A public operation (``security: []``, issue 17's password reset) needs no
            # token: without one it answers as with one.
            anonymous = {200, 202, 422} if op.get("security") == [] else {401}
            calls = [
                (client.request(method, url, json=body), anonymous),
                (client.request(method, url, json=body, headers=headers), {200, 404, 422}),
            ]
            for r, expected in calls:
                if r.status_code < 400:
                    continue
                assert r.status_code in expected, (method, path, r.status_code, r.text)
                assert str(r.status_code) in documented, (method, path, r.status_code)
                ref = documented[str(r.status_code)]["content"]["application/json"]["schema"]
                _error_validator(doc, ref["$ref"]).validate(r.json())
                assert r.json()["message"] == r.json()["error"]
                seen.append((method, path, r.status_code))
    assert {s for *_, s in seen} >= {401, 404, 422}


def test_the_report_endpoint_answers_its_documented_shapes(
    client: TestClient, headers: dict[str, str]
) -> None:
    doc = client.get("/openapi.json").json()
    op = doc["paths"]["/api/v1/transfers/{job_id}/report"]["get"]
    body = {"source": account("src@example.org"), "dest": account("dst@example.org")}
    job = client.post(f"{API}/transfers", json=body, headers=headers).json()["id"]
    assert "409" not in op["responses"]  # it once documented a 409 it never answers
    answers = [
        (404, client.get(f"{API}/transfers/feedfacefeedface/report", headers=headers)),
        (404, client.get(f"{API}/transfers/{job}/report", headers=headers)),  # not run yet
        (401, client.get(f"{API}/transfers/{job}/report")),
    ]
    for status, r in answers:
        assert r.status_code == status, r.text
        ref = op["responses"][str(status)]["content"]["application/json"]["schema"]["$ref"]
        _error_validator(doc, ref).validate(r.json())
        assert r.json()["code"] == {404: "not_found", 401: "unauthorized"}[status]
    assert "no report yet" in answers[1][1].json()["message"]
    invalid = client.post(f"{API}/transfers", json={"source": {}}, headers=headers)
    assert invalid.status_code == 422
    ref = doc["paths"]["/api/v1/transfers"]["post"]["responses"]["422"]["content"]
    _error_validator(doc, ref["application/json"]["schema"]["$ref"]).validate(invalid.json())
    assert invalid.json()["code"] == "invalid" and invalid.json()["errors"][0]["field"]
    twice = client.post(f"{API}/transfers", json=body, headers=headers)
    assert twice.status_code == 409 and twice.json()["code"] == "already_active"
    assert twice.json()["id"] == job


def test_a_too_large_body_is_documented_and_answered_in_the_one_shape(
    client: TestClient, headers: dict[str, str]
) -> None:
    doc = client.get("/openapi.json").json()
    op = doc["paths"]["/api/v1/transfers"]["post"]
    r = client.post(
        f"{API}/transfers",
        content=b'{"x": "' + b"a" * 2_000_000 + b'"}',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and "413" in op["responses"]
    ref = op["responses"]["413"]["content"]["application/json"]["schema"]["$ref"]
    _error_validator(doc, ref).validate(r.json())
    assert r.json()["code"] == "too_large"


# -- drift: the routes, the OpenAPI document and the web/REST parity table (issue 17) ------

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"

#: Every capability, its web routes and its REST routes: the table of docs/api.md ("Web
#: and REST: one capability, two doors"), kept here too.  The last item says why a
#: capability has one door only ("" for both).
PARITY: list[tuple[str, set[str], set[str], str]] = [
    ("list your transfers", {"GET /transfers"}, {"GET /api/v1/transfers"}, ""),
    (
        "order a transfer",
        {"GET /transfers/new", "POST /transfers/new"},
        {"POST /api/v1/transfers"},
        "",
    ),
    ("check an account", {"POST /transfers/new"}, {"POST /api/v1/account-checks"}, ""),
    ("list the folders as planned", {"POST /transfers/new"}, {"POST /api/v1/folder-listings"}, ""),
    (
        "date and size filters, renames, a folder for everything",
        {"POST /transfers/new"},
        {"POST /api/v1/transfers", "POST /api/v1/folder-listings"},
        "",
    ),
    (
        "follow a transfer",
        {
            "GET /transfers/{job_id}",
            "GET /transfers/{job_id}/summary",
            "GET /transfers/{job_id}/events",
        },
        {"GET /api/v1/transfers/{job_id}"},
        "",
    ),
    (
        "cancel",
        {"POST /transfers/{job_id}/cancel"},
        {"POST /api/v1/transfers/{job_id}/cancel"},
        "",
    ),
    (
        "run again",
        {"POST /transfers/{job_id}/rerun"},
        {"POST /api/v1/transfers/{job_id}/rerun"},
        "",
    ),
    (
        "new passwords, then resume",
        {"POST /transfers/{job_id}/credentials"},
        {"PUT /api/v1/transfers/{job_id}/credentials"},
        "",
    ),
    (
        "delete the stored passwords",
        {"POST /transfers/{job_id}/forget"},
        {"DELETE /api/v1/transfers/{job_id}/credentials"},
        "",
    ),
    (
        "the report",
        {"GET /transfers/{job_id}/report.json", "GET /transfers/{job_id}/receipt.html"},
        {"GET /api/v1/transfers/{job_id}/report"},
        "",
    ),
    (
        "every message's outcome",
        {"GET /transfers/{job_id}/messages", "GET /transfers/{job_id}/report.csv"},
        {"GET /api/v1/transfers/{job_id}/messages"},
        "",
    ),
    (
        "the receipt database",
        {"GET /transfers/{job_id}/receipt"},
        {"GET /api/v1/transfers/{job_id}/receipt"},
        "",
    ),
    (
        "staged move: the final pass now",
        {"POST /transfers/{job_id}/final-pass"},
        {"POST /api/v1/transfers/{job_id}/final-pass"},
        "",
    ),
    (
        "staged move: stop the schedule",
        {"POST /transfers/{job_id}/schedule/cancel"},
        {"DELETE /api/v1/transfers/{job_id}/schedule"},
        "",
    ),
    (
        "undo: preview, then undo",
        {"GET /transfers/{job_id}/undo", "POST /transfers/{job_id}/undo"},
        {"GET /api/v1/transfers/{job_id}/undo", "POST /api/v1/transfers/{job_id}/undo"},
        "",
    ),
    (
        "API tokens",
        {"GET /tokens", "POST /tokens", "POST /tokens/{token_id}/revoke"},
        {"GET /api/v1/tokens", "POST /api/v1/tokens", "DELETE /api/v1/tokens/{token_id}"},
        "",
    ),
    (
        "sign in with Google / Microsoft for an order",
        {"POST /transfers/new", "GET /oauth/callback"},
        {
            "POST /api/v1/oauth/{provider}/authorizations",
            "GET /api/v1/oauth/authorizations/{authorization_id}",
            "DELETE /api/v1/oauth/authorizations/{authorization_id}",
        },
        "",
    ),
    (
        "sign in again for a transfer",
        {"POST /transfers/{job_id}/sign-in", "GET /oauth/callback"},
        {"POST /api/v1/oauth/{provider}/authorizations"},
        "",
    ),
    (
        "forget a transfer's sign-in",
        {"POST /transfers/{job_id}/forget-sign-in"},
        {"DELETE /api/v1/transfers/{job_id}/sign-in"},
        "",
    ),
    (
        "domain credentials",
        {
            "GET /batch/domain",
            "POST /batch/domain/credentials",
            "POST /batch/domain/credentials/{credential_id}/delete",
        },
        {
            "GET /api/v1/domain-credentials",
            "POST /api/v1/domain-credentials",
            "DELETE /api/v1/domain-credentials/{credential_id}",
        },
        "",
    ),
    ("move a whole domain", {"POST /batch/domain"}, {"POST /api/v1/domain-batches"}, ""),
    (
        "a batch of pairs, checked before anything starts",
        {"GET /batch", "POST /batch"},
        {"POST /api/v1/batches"},
        "",
    ),
    (
        "your batches, one batch's dashboard",
        {"GET /batches", "GET /batches/{batch_id}"},
        {"GET /api/v1/batches", "GET /api/v1/batches/{batch_id}"},
        "",
    ),
    (
        "start a batch's good lines",
        {"POST /batches/{batch_id}/start"},
        {"POST /api/v1/batches/{batch_id}/start"},
        "",
    ),
    (
        "retry a batch's failed lines",
        {"POST /batches/{batch_id}/retry-failed"},
        {"POST /api/v1/batches/{batch_id}/retry-failed"},
        "",
    ),
    (
        "pay a batch's waiting transfers from your credits",
        {"POST /batches/{batch_id}/settle"},
        {"POST /api/v1/batches/{batch_id}/settle"},
        "",
    ),
    (
        "a batch's results as CSV",
        {"GET /batches/{batch_id}/results.csv"},
        {"GET /api/v1/batches/{batch_id}/results.csv"},
        "",
    ),
    ("drop a batch", {"POST /batches/{batch_id}/drop"}, {"DELETE /api/v1/batches/{batch_id}"}, ""),
    ("your account", {"GET /account"}, {"GET /api/v1/account"}, ""),
    (
        "change your log-in password",
        {"GET /account/password", "POST /account/password"},
        {"PUT /api/v1/account/password"},
        "",
    ),
    (
        "change your e-mail address",
        {"POST /account/email", "GET /account/email/confirm", "POST /account/email/confirm"},
        {"POST /api/v1/account/email"},
        "",
    ),
    (
        "forgot your password",
        {
            "GET /password/forgot",
            "POST /password/forgot",
            "GET /password/reset",
            "POST /password/reset",
        },
        {"POST /api/v1/password-resets"},
        "",
    ),
    ("delete your account", {"POST /account/delete"}, {"DELETE /api/v1/account"}, ""),
    (
        "operators: the console (customers, transfers, queue and workers)",
        {"GET /operator"},
        {
            "GET /api/v1/operator/customers",
            "GET /api/v1/operator/transfers",
            "GET /api/v1/operator/queue",
        },
        "",
    ),
    (
        "operators: a customer",
        {"GET /operator/customers/{user_id}"},
        {"GET /api/v1/operator/customers/{user_id}"},
        "",
    ),
    (
        "operators: suspend or unsuspend a customer",
        {
            "POST /operator/customers/{user_id}/suspend",
            "POST /operator/customers/{user_id}/unsuspend",
        },
        {
            "POST /api/v1/operator/customers/{user_id}/suspend",
            "POST /api/v1/operator/customers/{user_id}/unsuspend",
        },
        "",
    ),
    (
        "operators: a transfer and its report, read-only",
        {"GET /operator/transfers/{job_id}"},
        {
            "GET /api/v1/operator/transfers/{job_id}",
            "GET /api/v1/operator/transfers/{job_id}/report",
        },
        "",
    ),
    (
        "operators: cancel or requeue any transfer",
        {"POST /operator/transfers/{job_id}/cancel", "POST /operator/transfers/{job_id}/requeue"},
        {
            "POST /api/v1/operator/transfers/{job_id}/cancel",
            "POST /api/v1/operator/transfers/{job_id}/requeue",
        },
        "",
    ),
    (
        "operators: the audit log",
        {"GET /operator/audit"},
        {"GET /api/v1/operator/audit"},
        "",
    ),
    # Issue 20: billing.
    ("quote before ordering", {"POST /transfers/new"}, {"POST /api/v1/quotes"}, ""),
    (
        "pay for a waiting transfer by card",
        {"GET /transfers/{job_id}/pay"},
        {"POST /api/v1/transfers/{job_id}/payment"},
        "",
    ),
    (
        "pay a waiting transfer from your credits",
        {"POST /transfers/{job_id}/settle"},
        {"POST /api/v1/transfers/{job_id}/settle"},
        "",
    ),
    (
        "your balance and ledger",
        {"GET /billing", "GET /billing/ledger.csv"},
        {"GET /api/v1/billing", "GET /api/v1/billing/ledger.csv"},
        "",
    ),
    (
        "buy credits",
        {"POST /billing/bundles/{number}/buy", "GET /payments/{payment_id}/pay"},
        {"POST /api/v1/credit-purchases"},
        "",
    ),
    (
        "your payments and receipts",
        {"GET /payments/{payment_id}", "GET /payments/{payment_id}/receipt.pdf"},
        {
            "GET /api/v1/payments",
            "GET /api/v1/payments/{payment_id}",
            "GET /api/v1/payments/{payment_id}/receipt.pdf",
        },
        "",
    ),
    (
        "operators: grant credits",
        {"POST /operator/customers/{user_id}/credits"},
        {"POST /api/v1/operator/customers/{user_id}/credits"},
        "",
    ),
    (
        "Stripe's webhook",
        {"POST /stripe/webhook"},
        set(),
        "Stripe's calls only (signed), not a customer's",
    ),
]
#: Routes that are no customer capability (signing up and in, the documents, files).
NOT_CAPABILITIES = {
    "GET /",
    "GET /signup",
    "POST /signup",
    "GET /signup/confirm",
    "POST /signup/confirm",
    "GET /login",
    "POST /login",
    "POST /logout",
    "GET /healthz",
    "GET /openapi.json",
    "HEAD /openapi.json",
    "GET /docs",
    "GET /docs/assets",
    "GET /static",
}


def _routes(real: Service) -> set[str]:
    from tests.web.test_route_isolation import app_routes

    return {f"{m} {p}" for m, p in app_routes(create_app(real))}


def _documented(doc: dict[str, Any]) -> set[str]:
    return {f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops}


def test_every_api_route_is_documented_and_every_documented_path_routed(
    real: Service, client: TestClient
) -> None:
    """(a) The app's own routes against its OpenAPI document, both ways: a route under
    /api/ left out of the document (``include_in_schema=False``, a hand-mounted one) or a
    documented operation that nothing serves is drift."""
    routes = {r for r in _routes(real) if r.split(" ", 1)[1].startswith("/api/")}
    documented = _documented(client.get("/openapi.json").json())
    assert routes - documented == set(), "API routes missing from the OpenAPI document"
    assert documented - routes == set(), "documented operations that no route serves"


def _url(path: str) -> str:
    return re.sub(r"\{[a-z_]+\}", "nonexistent0", path)


def _validator(doc: dict[str, Any], schema: dict[str, Any]) -> Any:
    import jsonschema_rs

    return jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]})


def _probes(op: dict[str, Any], good: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """The requests every operation is sent: no token, a wrong token, unknown ids, and
    with a body: none, not JSON, the wrong JSON type, an empty object, too large."""
    bad = {"Authorization": "Bearer ym_not-a-token"}
    probes: list[tuple[str, dict[str, Any]]] = [
        ("no token", {}),
        ("a wrong token", {"headers": bad}),
        ("unknown ids", {"headers": good}),
    ]
    if "requestBody" in op:
        json_type = {**good, "Content-Type": "application/json"}
        probes += [
            ("malformed JSON", {"headers": json_type, "content": b'{"source": '}),
            ("a JSON list", {"headers": good, "json": []}),
            ("an empty object", {"headers": good, "json": {}}),
            ("a huge body", {"headers": json_type, "content": b'{"x": "' + b"a" * 300_000 + b'"}'}),
        ]
    return probes


def test_every_answer_of_every_operation_is_documented(
    client: TestClient, headers: dict[str, str]
) -> None:
    """(b) Walks the OpenAPI document: each operation is called with bad auth, unknown
    ids and bad bodies; every status it answers is one the document lists for it, and
    the body matches the schema documented for that status (errors: ``ErrorOut``)."""
    doc = client.get("/openapi.json").json()
    seen: set[int] = set()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for what, kwargs in _probes(op, headers):
                r = client.request(method, _url(path), **kwargs)
                where = (method.upper(), path, what, r.status_code, r.text[:200])
                assert r.status_code < 500, where
                assert str(r.status_code) in op["responses"], where
                seen.add(r.status_code)
                content = op["responses"][str(r.status_code)].get("content", {})
                schema = content.get("application/json", {}).get("schema")
                if r.status_code == 204:
                    assert r.content == b"", where
                elif schema is not None and r.headers["content-type"].startswith(
                    "application/json"
                ):
                    _validator(doc, schema).validate(r.json())
                if r.status_code >= 400:
                    assert r.json()["code"] and r.json()["message"] == r.json()["error"], where
    assert seen >= {200, 201, 400, 401, 404, 413, 422}, sorted(seen)


def _doc_table() -> dict[str, tuple[set[str], set[str], str]]:
    """docs/api.md's parity table: capability -> (web, REST, why one door)."""
    text = DOC.read_text()
    section = text.split("## Web and REST: one capability, two doors", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[set[str], set[str], str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("capability", "---"):
            continue
        web, rest = (set(re.findall(r"`([A-Z]+ /[^`]*)`", c)) for c in cells[1:3])
        rows[cells[0]] = (web, rest, cells[3])
    return rows


def test_every_web_capability_has_its_rest_twin_and_back(real: Service) -> None:
    """(c) Parity: every page route and every API route is in a row of the table; a row
    has both doors unless it says why not; the table names no route that is gone; and
    docs/api.md shows the same table."""
    routes = _routes(real)
    web_routes = {r for r in routes if not r.split(" ", 1)[1].startswith("/api/")}
    api_routes = routes - web_routes
    in_table_web = set().union(*(web for _, web, _, _ in PARITY))
    in_table_rest = set().union(*(rest for _, _, rest, _ in PARITY))
    assert web_routes - NOT_CAPABILITIES - in_table_web == set(), (
        "pages that are in no row of the parity table: add the row, with its REST twin"
    )
    assert api_routes - in_table_rest == set(), (
        "API routes that are in no row of the parity table: add the row, with its web twin"
    )
    assert (in_table_web | in_table_rest | NOT_CAPABILITIES) - routes == set(), "routes gone"
    one_door = [(name, why) for name, web, rest, why in PARITY if not (web and rest)]
    assert all(why for _, why in one_door), f"a capability with one door says why: {one_door}"
    table = {name: (web, rest, why) for name, web, rest, why in PARITY}
    assert _doc_table() == table, "docs/api.md's parity table differs from this test's"
