"""Tenant isolation through EVERY route of the app, found by walking ``app.routes``.

Each route must be declared in one of the categories below; a new route that is not
makes ``test_every_route_is_classified`` fail, so it cannot be added without saying how
it keeps customers apart.  Then, per category:

* job routes (``{job_id}``): bob reaching alice's finished transfer gets exactly what he
  gets for a transfer that does not exist (404, same body), and nothing changes; alice
  herself gets an answer (so the 404 is not just a broken route);
* token routes (``{token_id}``): bob cannot revoke alice's token;
* listings and forms: nothing of alice's (transfer id, e-mail, account, token name) is in
  what bob sees;
* routes that create things act on the caller's own account only;
* public routes show nothing of any customer.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from fastapi import FastAPI

from tests.web.conftest import Browser
from tests.web.fakes import FakeService
from tests.web.test_pages import job_id_of, order

API = "/api/v1"

JOB_ROUTES = {
    ("GET", "/transfers/{job_id}"),
    ("GET", "/transfers/{job_id}/summary"),
    ("GET", "/transfers/{job_id}/events"),
    ("GET", "/transfers/{job_id}/report.json"),
    ("GET", "/transfers/{job_id}/receipt"),
    ("POST", "/transfers/{job_id}/cancel"),
    ("POST", "/transfers/{job_id}/rerun"),
    ("POST", "/transfers/{job_id}/forget"),
    ("POST", "/transfers/{job_id}/sign-in"),
    ("POST", "/transfers/{job_id}/forget-sign-in"),
    ("DELETE", API + "/transfers/{job_id}/sign-in"),
    ("GET", API + "/transfers/{job_id}"),
    ("GET", API + "/transfers/{job_id}/report"),
    ("GET", API + "/transfers/{job_id}/receipt"),
    ("POST", API + "/transfers/{job_id}/cancel"),
    ("POST", API + "/transfers/{job_id}/rerun"),
    # issue 17: readable reports and undo
    ("GET", "/transfers/{job_id}/messages"),
    ("GET", "/transfers/{job_id}/report.csv"),
    ("GET", "/transfers/{job_id}/receipt.html"),
    ("GET", "/transfers/{job_id}/undo"),
    ("POST", "/transfers/{job_id}/undo"),
    ("GET", API + "/transfers/{job_id}/messages"),
    ("GET", API + "/transfers/{job_id}/undo"),
    ("POST", API + "/transfers/{job_id}/undo"),
    # Issue 17: new passwords for a stopped transfer.
    ("POST", "/transfers/{job_id}/credentials"),
    ("PUT", API + "/transfers/{job_id}/credentials"),
    # Issue 17 (parity): the web's "forget the passwords" over REST.
    ("DELETE", API + "/transfers/{job_id}/credentials"),
    # Issue 17: staged moves (final pass now, stop the schedule).
    ("POST", "/transfers/{job_id}/final-pass"),
    ("POST", "/transfers/{job_id}/schedule/cancel"),
    ("POST", API + "/transfers/{job_id}/final-pass"),
    ("DELETE", API + "/transfers/{job_id}/schedule"),
}
TOKEN_ROUTES = {("POST", "/tokens/{token_id}/revoke"), ("DELETE", API + "/tokens/{token_id}")}
#: Issue 16's domain credentials: bob cannot delete alice's.
CREDENTIAL_ROUTES = {
    ("POST", "/batch/domain/credentials/{credential_id}/delete"),
    ("DELETE", API + "/domain-credentials/{credential_id}"),
}
LISTINGS = {
    ("GET", "/"),
    ("GET", "/transfers"),
    ("GET", "/transfers/new"),
    ("GET", "/tokens"),
    ("GET", "/batch"),
    ("GET", "/batch/domain"),
    ("GET", API + "/domain-credentials"),
    ("GET", "/account/password"),
    ("GET", API + "/transfers"),
    ("GET", API + "/tokens"),  # issue 17 (parity)
    # Issue 17: the customer's own account.
    ("GET", "/account"),
    ("GET", API + "/account"),
}
CREATORS = {
    ("POST", "/transfers/new"),
    ("POST", "/tokens"),
    ("POST", "/batch"),
    ("POST", "/batch/domain"),
    ("POST", "/batch/domain/credentials"),
    ("POST", API + "/domain-credentials"),
    ("POST", API + "/domain-batches"),
    ("POST", "/account/password"),
    ("POST", API + "/transfers"),
    ("POST", API + "/oauth/{provider}/authorizations"),
    # Issue 17 (parity): a token, and checks that store nothing (the caller's own slots).
    ("POST", API + "/tokens"),
    ("POST", API + "/account-checks"),
    ("POST", API + "/folder-listings"),
    # Issue 17: the account lifecycle acts on the caller's own account, after its password.
    ("POST", "/account/email"),
    ("POST", "/account/delete"),
    ("PUT", API + "/account/password"),
    ("POST", API + "/account/email"),
    ("DELETE", API + "/account"),
}
#: A customer's OAuth2 sign-ins by id (issue 16): another customer's is a missing one;
#: tested over the real Service in tests/web/test_oauth_web.py (the fake has none).
SIGN_IN_ROUTES = {
    ("GET", API + "/oauth/authorizations/{authorization_id}"),
    ("DELETE", API + "/oauth/authorizations/{authorization_id}"),
}
#: A customer's batches by id (issue 17, journey-batches): another customer's is a missing
#: one; tested over the real Service in tests/service/test_batches.py (the fake has none).
BATCH_ROUTES = {
    ("GET", "/batches/{batch_id}"),
    ("GET", "/batches/{batch_id}/results.csv"),
    ("POST", "/batches/{batch_id}/start"),
    ("POST", "/batches/{batch_id}/retry-failed"),
    ("POST", "/batches/{batch_id}/settle"),  # issue 20
    ("POST", "/batches/{batch_id}/drop"),
    ("GET", API + "/batches/{batch_id}"),
    ("GET", API + "/batches/{batch_id}/results.csv"),
    ("POST", API + "/batches/{batch_id}/start"),
    ("POST", API + "/batches/{batch_id}/retry-failed"),
    ("POST", API + "/batches/{batch_id}/settle"),  # issue 20
    ("DELETE", API + "/batches/{batch_id}"),
    # The customer's own batches, and a new one (the real Service: same test).
    ("GET", "/batches"),
    ("GET", API + "/batches"),
    ("POST", API + "/batches"),
}
#: Issue 17: the operator's console; a customer gets the 404 of a missing path (tested
#: here over the stand-in, which has no operators, and in tests/web/test_operator.py).
OPERATOR_ROUTES = {
    ("GET", "/operator"),
    ("GET", "/operator/audit"),
    ("GET", "/operator/customers/{user_id}"),
    ("POST", "/operator/customers/{user_id}/suspend"),
    ("POST", "/operator/customers/{user_id}/unsuspend"),
    ("GET", "/operator/transfers/{job_id}"),
    ("POST", "/operator/transfers/{job_id}/cancel"),
    ("POST", "/operator/transfers/{job_id}/requeue"),
    ("GET", API + "/operator/customers"),
    ("GET", API + "/operator/customers/{user_id}"),
    ("POST", API + "/operator/customers/{user_id}/suspend"),
    ("POST", API + "/operator/customers/{user_id}/unsuspend"),
    ("GET", API + "/operator/transfers"),
    ("GET", API + "/operator/transfers/{job_id}"),
    ("GET", API + "/operator/transfers/{job_id}/report"),
    ("POST", API + "/operator/transfers/{job_id}/cancel"),
    ("POST", API + "/operator/transfers/{job_id}/requeue"),
    ("GET", API + "/operator/queue"),
    ("GET", API + "/operator/audit"),
    ("POST", API + "/operator/customers/{user_id}/credits"),  # issue 20
}
#: Issue 20: billing over REST: a customer's balance, ledger, payments and receipts, and
#: paying for their own waiting transfer; another customer's is a missing one.  Tested
#: over the real Service in tests/web/test_billing_api.py (the fake has no billing).
BILLING_API_ROUTES = {
    ("POST", API + "/quotes"),
    ("POST", API + "/transfers/{job_id}/payment"),
    ("POST", API + "/transfers/{job_id}/settle"),
    ("GET", API + "/billing"),
    ("GET", API + "/billing/ledger.csv"),
    ("POST", API + "/credit-purchases"),
    ("GET", API + "/payments"),
    ("GET", API + "/payments/{payment_id}"),
    ("GET", API + "/payments/{payment_id}/receipt.pdf"),
}
PUBLIC = {
    # The providers' way back: a sign-in is bound to the session that started it.
    ("GET", "/oauth/callback"),
    ("GET", "/signup"),
    ("POST", "/signup"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("GET", "/signup/confirm"),
    ("POST", "/signup/confirm"),
    ("GET", "/healthz"),
    ("GET", "/openapi.json"),
    ("HEAD", "/openapi.json"),
    ("GET", "/static"),
    ("GET", "/docs"),  # issue 17: Swagger UI over /openapi.json
    ("GET", "/docs/assets"),
    # Issue 17: forgot password and the mailed links (one answer for every address).
    ("GET", "/password/forgot"),
    ("POST", "/password/forgot"),
    ("GET", "/password/reset"),
    ("POST", "/password/reset"),
    ("GET", "/account/email/confirm"),
    ("POST", "/account/email/confirm"),
    ("POST", API + "/password-resets"),
}


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route, included routers and mounts too."""
    out: set[tuple[str, str]] = set()

    def walk(routes: list[Any], prefix: str) -> None:
        for r in routes:
            inner = getattr(r, "original_router", None)  # FastAPI's included router
            if inner is not None:
                walk(inner.routes, prefix + r.include_context.prefix)
            elif getattr(r, "methods", None):
                out.update((m, prefix + r.path) for m in r.methods)
            elif hasattr(r, "app") and hasattr(r, "path"):  # a Mount (static files)
                out.add(("GET", prefix + r.path))
            else:
                raise AssertionError(f"a route of an unknown kind: {r!r}")

    walk(app.routes, "")
    return out


#: Issue 20: the billing pages.  The fake service here has no billing (these routes
#: answer its 404 to everyone); their isolation is tested against the real service with
#: billing on: another customer's payment or transfer is the 404 of a missing one
#: (tests/web/test_billing_pages.py).
BILLING_ROUTES = BILLING_API_ROUTES | {
    ("GET", "/billing"),
    ("GET", "/billing/ledger.csv"),
    ("POST", "/billing/bundles/{number}/buy"),
    ("GET", "/payments/{payment_id}"),
    ("GET", "/payments/{payment_id}/pay"),
    ("GET", "/payments/{payment_id}/receipt.pdf"),
    ("GET", "/transfers/{job_id}/pay"),
    ("POST", "/transfers/{job_id}/settle"),
    ("POST", "/stripe/webhook"),  # Stripe's, signed: no customer's
    ("POST", "/operator/customers/{user_id}/credits"),  # operators only
}


def test_every_route_is_classified(app: FastAPI) -> None:
    declared = (
        JOB_ROUTES
        | TOKEN_ROUTES
        | CREDENTIAL_ROUTES
        | LISTINGS
        | CREATORS
        | PUBLIC
        | SIGN_IN_ROUTES
        | BATCH_ROUTES
        | OPERATOR_ROUTES
        | BILLING_ROUTES
    )
    actual = app_routes(app)
    assert actual - declared == set(), "new routes: say how they keep customers apart"
    assert declared - actual == set(), "routes gone: update this test"


@pytest.fixture
def world(app: FastAPI, alice: Browser, bob: Browser, fake: FakeService) -> dict[str, Any]:
    """Alice with a finished transfer and a token; bob with his own token, logged in."""
    jid = job_id_of(order(alice))
    fake.finish(jid)
    a_uid = fake.authenticate("alice@example.org", "correct horse battery")
    b_uid = fake.authenticate("bob@example.org", "correct horse battery")
    assert a_uid is not None and b_uid is not None
    a_token = fake.create_token(a_uid, "alices-secret-script")
    a_cred = fake.add_domain_credential(
        a_uid,
        {"kind": "client_credentials", "domain": "alice-corp.example", "label": "alices-app"},
    )["id"]
    b_token = fake.create_token(b_uid, "bobs-script")
    (a_tid,) = [t["id"] for t in fake.list_tokens(a_uid)]
    bob.get("/transfers")  # a fresh CSRF token
    return {
        "jid": jid,
        "a_token": a_token,
        "b_token": b_token,
        "a_tid": a_tid,
        "a_cred": a_cred,
    }


def snapshot(fake: FakeService) -> Any:
    """Alice's data (bob's own token records when it was last used: that may change)."""
    alice = fake.authenticate("alice@example.org", "correct horse battery")
    tokens = {k: v for k, v in fake.tokens.items() if v["user"] == alice}
    return copy.deepcopy((fake.jobs, tokens, fake.users, fake.domain_credentials))


def call(b: Browser, method: str, path: str, token: str) -> Any:
    if path.startswith(API):
        return b.client.request(
            method,
            path,
            headers={"Authorization": f"Bearer {token}"},
            follow_redirects=False,
            json={} if method == "PUT" else None,  # a PUT's body: the least it may be
        )
    if method == "GET":
        return b.client.get(path, follow_redirects=False)
    return b.post(path, {})


MISSING = "feedfacefeedface"


@pytest.mark.parametrize(("method", "route"), sorted(JOB_ROUTES))
def test_another_customers_job_is_like_a_missing_one(
    alice: Browser, bob: Browser, fake: FakeService, world: dict[str, Any], method: str, route: str
) -> None:
    jid = world["jid"]
    before = snapshot(fake)
    theirs = call(bob, method, route.format(job_id=jid), world["b_token"])
    missing = call(bob, method, route.format(job_id=MISSING), world["b_token"])
    assert theirs.status_code == missing.status_code == 404, (theirs.status_code, route)
    assert theirs.text.replace(jid, "X") == missing.text.replace(MISSING, "X")
    assert jid not in theirs.text
    assert snapshot(fake) == before, "bob's request changed alice's data"
    owner = call(alice, method, route.format(job_id=jid), world["a_token"])
    assert owner.status_code != 404, (route, owner.status_code, owner.text[:200])


@pytest.mark.parametrize(("method", "route"), sorted(TOKEN_ROUTES))
def test_another_customers_token_cannot_be_touched(
    bob: Browser, fake: FakeService, world: dict[str, Any], method: str, route: str
) -> None:
    before = snapshot(fake)
    theirs = call(bob, method, route.format(token_id=world["a_tid"]), world["b_token"])
    missing = call(bob, method, route.format(token_id=987654321), world["b_token"])
    assert theirs.status_code == missing.status_code
    assert snapshot(fake) == before
    assert fake.user_for_token(world["a_token"]) is not None  # still works


@pytest.mark.parametrize(("method", "route"), sorted(CREDENTIAL_ROUTES))
def test_another_customers_domain_credential_cannot_be_deleted(
    alice: Browser, bob: Browser, fake: FakeService, world: dict[str, Any], method: str, route: str
) -> None:
    before = snapshot(fake)
    theirs = call(bob, method, route.format(credential_id=world["a_cred"]), world["b_token"])
    missing = call(bob, method, route.format(credential_id=MISSING), world["b_token"])
    assert theirs.status_code == missing.status_code, route
    assert theirs.text.replace(world["a_cred"], "X") == missing.text.replace(MISSING, "X")
    assert snapshot(fake) == before
    assert world["a_cred"] in fake.domain_credentials
    owner = call(alice, method, route.format(credential_id=world["a_cred"]), world["a_token"])
    assert owner.status_code in (204, 303), (route, owner.status_code)
    assert world["a_cred"] not in fake.domain_credentials


@pytest.mark.parametrize(("method", "route"), sorted(OPERATOR_ROUTES))
def test_a_customer_gets_the_404_of_a_missing_path_from_the_console(
    bob: Browser, fake: FakeService, world: dict[str, Any], method: str, route: str
) -> None:
    before = snapshot(fake)
    path = route.format(job_id=world["jid"], user_id=1)
    r = call(bob, method, path, world["b_token"])
    missing = call(bob, method, route.split("/operator")[0] + "/no-such-path", world["b_token"])
    assert r.status_code == missing.status_code == 404, (route, r.status_code)
    assert world["jid"] not in r.text
    assert snapshot(fake) == before


def _alices_traces(world: dict[str, Any]) -> list[str]:
    return [
        world["jid"],
        "alice@example.org",
        "ada@old.example",
        "alices-secret-script",
        world["a_cred"],
        "alice-corp.example",
    ]


@pytest.mark.parametrize(("method", "route"), sorted(LISTINGS))
def test_listings_show_nothing_of_another_customer(
    alice: Browser, bob: Browser, world: dict[str, Any], method: str, route: str
) -> None:
    r = call(bob, method, route, world["b_token"])
    if route == "/":  # logged in: on to the list of transfers
        assert (r.status_code, r.headers["location"]) == (303, "/transfers")
    else:
        assert r.status_code == 200, (route, r.status_code)
    for trace in _alices_traces(world):
        assert trace not in r.text, (route, trace)
    # ...while alice's own listing of transfers does show hers.
    if route in ("/transfers", API + "/transfers"):
        assert world["jid"] in call(alice, method, route, world["a_token"]).text


@pytest.mark.parametrize(("method", "route"), sorted(CREATORS))
def test_creating_routes_act_on_the_callers_account_only(
    bob: Browser, fake: FakeService, world: dict[str, Any], method: str, route: str
) -> None:
    jobs = {k: copy.deepcopy(v) for k, v in fake.jobs.items()}
    tokens = {k: v for k, v in fake.tokens.items() if k == world["a_tid"]}
    r = call(bob, method, route, world["b_token"])
    assert r.status_code < 500, (route, r.status_code)
    for trace in _alices_traces(world):
        assert trace not in r.text, (route, trace)
    assert {k: v for k, v in fake.jobs.items() if k in jobs} == jobs
    assert fake.tokens[world["a_tid"]] == tokens[world["a_tid"]]
    assert all(
        j.user_id != fake.authenticate("alice@example.org", "correct horse battery")
        for k, j in fake.jobs.items()
        if k not in jobs
    )


@pytest.mark.parametrize(("method", "route"), sorted(PUBLIC - {("POST", "/logout")}))
def test_public_routes_show_no_customer_data(
    app: FastAPI, world: dict[str, Any], method: str, route: str
) -> None:
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="http://testserver") as anon:
        assets = {"/static": "/static/style.css", "/docs/assets": "/docs/assets/swagger-ui.css"}
        path = assets.get(route, route)
        r = anon.request(method, path, follow_redirects=False)
    assert r.status_code < 500
    for trace in _alices_traces(world):
        assert trace not in r.text, (route, trace)
    assert not re.search(r"/transfers/[0-9a-f]{16}", r.text)


def page_posts(app: FastAPI) -> list[str]:
    # (The console's forms answer a customer 404 before anything: OPERATOR_ROUTES; an
    # operator's form without the token is refused in tests/web/test_operator.py.
    # Stripe's webhook is no form: its calls are signed, tests/web/test_billing_pages.py.)
    return sorted(
        p
        for m, p in app_routes(app)
        if m == "POST"
        and not p.startswith(API)
        and not p.startswith("/operator")
        and p != "/stripe/webhook"
    )


def test_every_page_post_checks_the_csrf_token(
    app: FastAPI, alice: Browser, fake: FakeService, world: dict[str, Any]
) -> None:
    """Every form route of the pages, found by walking the routes (so a new one cannot
    be forgotten): without the session's CSRF token it is refused and changes nothing."""
    posts = page_posts(app)
    assert "/transfers/{job_id}/forget" in posts and len(posts) >= 10
    for route in posts:
        path = route.format(
            job_id=world["jid"],
            token_id=world["a_tid"],
            credential_id=world["a_cred"],
            batch_id=MISSING,
            number=1,
        )
        for token in (None, "forged-token-value-000000000000"):
            before = snapshot(fake)
            form = {"name": "x", "action": "check_source"}
            if token is not None:
                form["csrf_token"] = token
            r = alice.post(path, form, csrf=False)
            assert r.status_code == 403, (route, r.status_code)
            assert snapshot(fake) == before, route
    assert alice.get("/transfers").status_code == 200  # still logged in
