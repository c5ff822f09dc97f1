"""Schemathesis against the REST API's own OpenAPI document, over the REAL Service
(in process, ASGI): valid and invalid bodies, parameters and headers for every
operation.  Whatever comes in, the answer is never a 5xx, and a 4xx carries a JSON
``{"error": "..."}`` message (issue 6: "invalid API bodies: 4xx with a message, never a
500")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.svckit import SmtpSink, smtp_sink
from tests.web.test_route_isolation import app_routes
from yippiemove.service.config import Settings
from yippiemove.service.core import Service
from yippiemove.web.app import create_app

__all__ = ["smtp_sink"]  # the fixture, used here


@pytest.fixture
def service(tmp_path: Path, smtp_sink: SmtpSink) -> Iterator[Service]:
    """Mail goes to a sink: the routes that mail (password resets) run their real path."""
    svc = Service(
        Settings.load(
            tmp_path / "svc",
            maintenance_interval=3600.0,
            smtp_host="127.0.0.1",
            smtp_port=smtp_sink.port,
            smtp_from="moves@yippiemove.example",
        )
    )
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def auth(service: Service) -> dict[str, str]:
    uid = service.create_user("fuzz@example.org", "fuzz password!")
    return {"Authorization": f"Bearer {service.create_token(uid, 'schemathesis')}"}


MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


def operations(service: Service) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(service))
    return [result.ok() for result in schema.get_all_operations()]


def test_every_operation_is_fuzzed(service: Service) -> None:
    """The loop below sees every API route of the app (a schema that failed to load or a
    route left out of the document would escape the fuzzing)."""
    ops = {(op.method.upper(), op.path) for op in operations(service)}
    api = {r for r in app_routes(create_app(service)) if r[1].startswith("/api/")}
    # 7, + issue 16: 4 of domain-wide moves, 4 of OAuth2 sign-ins; + issue 17: credentials,
    # messages, undo preview, undo; + issue 17: staged moves' final pass, cancel schedule;
    # + issue 17 (journey-batches): 7 of batches; + issue 17 (journey-account): 5 of the
    # customer's account; + 11 of the operators' console; + issue 17 (parity): account
    # checks, folder listings, deleting stored passwords, tokens (list, create, revoke);
    # + issue 20: 10 of billing (quotes, pay, settle, balance, ledger CSV, bundles,
    # payments, a payment, its receipt, operators' grants)
    assert ops == api and len(ops) == 61


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name.lower())
@pytest.mark.timeout(300)
def test_no_input_makes_the_api_fail(
    service: Service, auth: dict[str, str], mode: Any, request: pytest.FixtureRequest
) -> None:
    # Examples per operation: 12 in the suite (random ones, new in every run: CI runs add
    # up), 50 with --campaign-long.
    examples = 50 if request.config.getoption("--campaign-long") else 12
    seen: set[tuple[str, int]] = set()
    uid = service.authenticate("fuzz@example.org", "fuzz password!")
    assert uid is not None
    own_tokens = {str(t["id"]) for t in service.list_tokens(uid)}
    for op in operations(service):

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def check(case: Any) -> None:
            if (
                case.method == "DELETE"
                and str((case.path_parameters or {}).get("token_id")) in own_tokens
            ):
                return  # revoking the fuzzer's own token would leave only 401s to see
            for headers in (auth, {}):  # with a valid token, and without one
                r = case.call(headers=headers)
                seen.add((case.method, r.status_code))
                assert r.status_code < 500, (case.method, case.formatted_path, r.text[:300])
                if 400 <= r.status_code < 500:
                    body = r.json()
                    assert isinstance(body.get("error"), str) and body["error"], body

        check()
    assert any(code == 401 for _, code in seen)  # the token-less calls were refused
    # ...and the fuzzer's own token was never revoked: its calls were really made with it.
    assert {str(t["id"]) for t in service.list_tokens(uid)} >= own_tokens


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_huge_body_is_413_before_it_is_read(
    service: Service, auth: dict[str, str], chunked: bool
) -> None:
    """40 MB, announced or streamed without a Content-Length: refused with a message."""

    def body() -> Iterator[bytes]:
        yield b'{"source": "'
        for _ in range(40):
            yield b"x" * (1 << 20)
        yield b'"}'

    content: bytes | Iterator[bytes] = body() if chunked else b"".join(body())
    with TestClient(create_app(service)) as client:
        r = client.post(
            "/api/v1/transfers",
            content=content,
            headers={**auth, "Content-Type": "application/json"},
        )
    assert r.status_code == 413
    assert "too large" in r.json()["error"]
