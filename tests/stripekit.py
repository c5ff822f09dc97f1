"""A real local Stripe for the tests: localstripe in a subprocess, and small helpers.

No mocks: the tests talk HTTP to localstripe 1.15 (docs/billing.md says what it does and
does not do), through ``yippiemove.service.stripe_gateway`` like the service does.

How a test gets one:

- the module-scoped fixture ``local_stripe`` (one localstripe per test module, about a
  second to start)::

      from tests.stripekit import local_stripe

      __all__ = ["local_stripe"]  # the fixture, used below

      def test_x(local_stripe):
          gateway = local_stripe.gateway("whsec_...")

- or its own: ``with LocalStripe() as stripe: ...`` (started on entry, its process group
  killed on exit).

localstripe keeps one state per process (payments, webhooks): webhooks registered with
:meth:`LocalStripe.add_webhook` stay for the fixture's life, and receive every event of
every test of the module (there is no way to remove one), also the events of payments
made just before they were registered (it sends each event a second after it, to the
webhooks registered by then): wait for the event of your own intent
(``WebhookSink.wait_for(type, intent_id)``).

What else is here:

- :func:`sign` and :func:`event_body`: a Stripe-Signature header computed per Stripe's
  documented scheme (``t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``) and an
  event's JSON, for events localstripe never sends (disputes).
- :meth:`LocalStripe.pay`: pays an intent server-side, as far as localstripe allows
  (below), for tests without a browser.
- :class:`WebhookSink`: an HTTP server that keeps the webhooks it receives.
- :class:`RecordingProxy`: an HTTP proxy in front of localstripe that records every
  request's headers (e.g. the Idempotency-Key) and can answer some requests itself.

Paying an intent on localstripe 1.15.10 (what works, checked):

- ``POST /v1/payment_methods`` (type=card, card[number], card[exp_month],
  card[exp_year], card[cvc]) with the secret key: a ``pm_``.
- ``POST /v1/payment_intents/<id>`` with ``payment_method=pm_...``: the intent goes to
  ``requires_confirmation``.
- ``POST /v1/payment_intents/<id>/confirm`` with no parameter: the charge is made:
  ``succeeded``; with 4000000000000341 it answers 402 ``card_declined`` and the intent is
  back at ``requires_payment_method`` with a ``last_payment_error``; with a 3D Secure
  card (4000002500003155) ``requires_action``, and then
  ``POST /v1/payment_intents/<id>/_authenticate?success=true`` with
  ``{"key": <pk_...>, "client_secret": ...}`` (what its fake Stripe.js does) charges it.
- Not possible: ``confirm`` with ``payment_method=`` (500 "Not implemented"), and the
  fake Stripe.js's ``confirmCardPayment(client_secret, {payment_method: {card}})``
  ignores its card: it only opens a "3D Secure" dialog and calls ``_authenticate``,
  which answers 400 unless the intent is already at ``requires_action``.

localstripe writes its whole state to ``/tmp/localstripe.pickle`` after each change (the
path is fixed): two of them at once, or one file left by another user, would collide.
:class:`LocalStripe` starts it with that write switched off (a two-line launcher instead
of the console script; ``--from-scratch`` so nothing is read either).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import queue
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest

from yippiemove.service.stripe_gateway import StripeGateway

__all__ = [
    "DECLINED_CARD",
    "GOOD_CARD",
    "THREE_D_SECURE_CARD",
    "Delivery",
    "LocalStripe",
    "Recorded",
    "RecordingProxy",
    "WebhookSink",
    "event_body",
    "free_port",
    "local_stripe",
    "sign",
]

GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000341"  # attaches, then declined when charged
THREE_D_SECURE_CARD = "4000002500003155"  # requires_action until _authenticate

# localstripe's server.start(), with its state never written to /tmp/localstripe.pickle.
_LAUNCHER = (
    "import localstripe.resources as r\n"
    "r.Store.dump_to_disk = lambda self: None\n"
    "from localstripe.server import start\n"
    "start()\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A Stripe-Signature header for ``payload``, per Stripe's documented scheme."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), str(t).encode() + b"." + payload, hashlib.sha256)
    return f"t={t},v1={mac.hexdigest()}"


def event_body(
    event_type: str,
    obj: dict[str, Any],
    *,
    event_id: str | None = None,
    created: int | None = None,
) -> bytes:
    """An event's JSON as Stripe sends it (``id``, ``object``, ``type``, ``created``,
    ``data.object``)."""
    event = {
        "id": event_id or "evt_" + secrets.token_hex(8),
        "object": "event",
        "type": event_type,
        "created": int(time.time()) if created is None else created,
        "livemode": False,
        "api_version": "2017-08-15",
        "data": {"object": obj},
    }
    return json.dumps(event, indent=2).encode()


def intent_id_of(client_secret_or_id: str) -> str:
    m = re.fullmatch(r"(pi_[A-Za-z0-9]+)(?:_secret_[A-Za-z0-9]+)?", client_secret_or_id)
    if not m:
        raise ValueError("not a PaymentIntent id or client secret")
    return m.group(1)


class LocalStripe:
    """localstripe on a free port, in its own process group."""

    def __init__(self, *, start_timeout: float = 20.0) -> None:
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._port = 0
        self._webhooks = 0
        self.secret_key = "sk_test_local" + secrets.token_hex(12)
        self.publishable_key = "pk_test_local" + secrets.token_hex(12)

    def __repr__(self) -> str:
        return f"LocalStripe(port={self._port})"

    # -- life ------------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        if self._proc is None:
            raise RuntimeError("localstripe is not running")
        return f"http://127.0.0.1:{self._port}"

    @property
    def js_url(self) -> str:
        """Its fake Stripe.js v3 (takes its API address from its own URL)."""
        return self.api_base + "/js.stripe.com/v3/"

    @property
    def log_path(self) -> Path:
        assert self._dir is not None
        return Path(self._dir.name) / "localstripe.log"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, AssertionError):
            return ""

    def start(self) -> LocalStripe:
        if self._proc is not None:
            return self
        self._dir = tempfile.TemporaryDirectory(prefix="localstripe-")
        last = ""
        for _ in range(3):  # the port may be taken between free_port() and its bind
            self._port = free_port()
            with open(self.log_path, "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-c", _LAUNCHER, "--port", str(self._port), "--from-scratch"],
                    cwd=self._dir.name,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self._proc = proc
            if self._wait_ready(proc):
                return self
            last = self.log_text()[-2000:]
            self._kill()
        self._dir.cleanup()
        self._dir = None
        raise RuntimeError(f"localstripe did not start:\n{last}")

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> bool:
        deadline = time.monotonic() + self._start_timeout
        url = f"http://127.0.0.1:{self._port}/js.stripe.com/v3/"
        with httpx.Client(timeout=2.0, trust_env=False) as http:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    return False
                try:
                    if http.get(url).status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        return False

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        proc.wait()

    def stop(self) -> None:
        self._kill()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> LocalStripe:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- use -------------------------------------------------------------------------

    def gateway(self, webhook_secret: str, **kwargs: Any) -> StripeGateway:
        """A gateway on this localstripe (no description: localstripe refuses it)."""
        kwargs.setdefault("api_base", self.api_base)
        kwargs.setdefault("send_description", False)
        return StripeGateway(self.secret_key, webhook_secret, **kwargs)

    def _http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.api_base,
            auth=(self.secret_key, ""),
            timeout=10.0,
            trust_env=False,
        )

    def add_webhook(
        self, url: str, secret: str, events: list[str] | None = None, *, name: str | None = None
    ) -> str:
        """Registers a webhook endpoint: localstripe POSTs each event (of ``events``, or
        all) to ``url`` about a second after it happens, signed with ``secret``.
        Returns its name."""
        self._webhooks += 1
        name = name or f"hook{self._webhooks}"
        body: dict[str, Any] = {"url": url, "secret": secret}
        if events is not None:
            body["events"] = list(events)
        with self._http() as http:
            answer = http.post(f"/_config/webhooks/{name}", json=body)
        if answer.status_code != 200:
            raise RuntimeError(f"localstripe refused the webhook: HTTP {answer.status_code}")
        return name

    def pay(self, client_secret_or_intent_id: str, card: str = GOOD_CARD) -> str:
        """Pays an intent with ``card`` as far as localstripe can (module docstring): a
        PaymentMethod, attached to the intent, confirm, and the 3D Secure step if asked
        (passed).  Returns the intent's status after it (``succeeded``, or
        ``requires_payment_method`` for a declined card)."""
        intent_id = intent_id_of(client_secret_or_intent_id)
        with self._http() as http:
            method = http.post(
                "/v1/payment_methods",
                data={
                    "type": "card",
                    "card[number]": card,
                    "card[exp_month]": "12",
                    "card[exp_year]": str(time.gmtime().tm_year + 5),
                    "card[cvc]": "123",
                },
            )
            method.raise_for_status()
            attach = http.post(
                f"/v1/payment_intents/{intent_id}", data={"payment_method": method.json()["id"]}
            )
            attach.raise_for_status()
            confirm = http.post(f"/v1/payment_intents/{intent_id}/confirm")
            if confirm.status_code not in (200, 402):  # 402: declined
                confirm.raise_for_status()
            intent = http.get(f"/v1/payment_intents/{intent_id}").json()
            if intent["status"] == "requires_action":
                done = http.post(
                    f"/v1/payment_intents/{intent_id}/_authenticate",
                    params={"success": "true"},
                    json={"key": self.publishable_key, "client_secret": intent["client_secret"]},
                    auth=None,
                )
                if done.status_code not in (200, 402):
                    done.raise_for_status()
                intent = http.get(f"/v1/payment_intents/{intent_id}").json()
            return str(intent["status"])


@pytest.fixture(scope="module")
def local_stripe() -> Iterator[LocalStripe]:
    with LocalStripe() as stripe:
        yield stripe


# -- small HTTP servers -----------------------------------------------------------------


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client went away
            super().handle_error(request, client_address)


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1, in a thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self  # type: ignore[attr-defined]
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@dataclass(frozen=True)
class Delivery:
    """One webhook request received: its body and Stripe-Signature header."""

    body: bytes
    signature: str | None
    headers: dict[str, str]

    def _json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def type(self) -> str | None:
        return self._json().get("type")

    @property
    def object_id(self) -> str | None:
        """The id of the event's object (``data.object.id``)."""
        obj = (self._json().get("data") or {}).get("object") or {}
        return obj.get("id") if isinstance(obj, dict) else None


class WebhookSink(_Server):
    """Receives webhooks at :attr:`url` (any path), answers 200 and keeps them."""

    def __init__(self) -> None:
        self.deliveries: queue.Queue[Delivery] = queue.Queue()
        super().__init__(_SinkHandler)

    def wait_for(
        self, event_type: str, object_id: str | None = None, timeout: float = 10.0
    ) -> Delivery:
        """The first delivery (not yet taken) of that type, and about that object
        (``data.object.id``) if given; the others before it are dropped.  Name the
        object: an event of an earlier payment may arrive here first (localstripe sends
        each event a second after it, to the webhooks registered by then)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {event_type} webhook within {timeout} s")
            try:
                delivery = self.deliveries.get(timeout=left)
            except queue.Empty:
                continue
            if delivery.type == event_type and (
                object_id is None or delivery.object_id == object_id
            ):
                return delivery

    def __enter__(self) -> WebhookSink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _SinkHandler(_Quiet):
    def do_POST(self) -> None:
        body = self._body()
        sink: WebhookSink = self.server.owner  # type: ignore[attr-defined]
        sink.deliveries.put(
            Delivery(body, self.headers.get("Stripe-Signature"), dict(self.headers.items()))
        )
        self._answer(200, {"Content-Type": "text/plain"}, b"ok")


@dataclass(frozen=True)
class Recorded:
    """One request that reached the proxy (headers with lower-case names)."""

    method: str
    path: str
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)


#: A proxy's hook: given a request, an answer (status, headers, body) to send instead of
#: forwarding it, or None to forward it.
Hook = Callable[[Recorded], "tuple[int, dict[str, str], bytes] | None"]


class RecordingProxy(_Server):
    """An HTTP proxy to ``target`` (point a gateway's ``api_base`` at :attr:`url`): it
    records every request in :attr:`requests`, forwards it, and sends back the answer;
    ``hook`` may answer a request itself instead."""

    _HOP = frozenset({"host", "content-length", "connection", "keep-alive", "transfer-encoding"})

    def __init__(self, target: str, hook: Hook | None = None) -> None:
        self.target = target.rstrip("/")
        self.hook = hook
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=15.0, trust_env=False)
        super().__init__(_ProxyHandler)

    def stop(self) -> None:
        super().stop()
        self._client.close()

    def __enter__(self) -> RecordingProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.requests.append(rec)
        if self.hook is not None:
            answer = self.hook(rec)
            if answer is not None:
                return answer
        headers = {k: v for k, v in rec.headers.items() if k not in self._HOP}
        reply = self._client.request(
            rec.method, self.target + rec.path, headers=headers, content=rec.body
        )
        out = {
            k: v
            for k, v in reply.headers.items()
            if k.lower() not in self._HOP and k.lower() != "content-encoding"
        }
        return reply.status_code, out, reply.content


class _ProxyHandler(_Quiet):
    def _any(self) -> None:
        proxy: RecordingProxy = self.server.owner  # type: ignore[attr-defined]
        rec = Recorded(
            self.command,
            self.path,
            {k.lower(): v for k, v in self.headers.items()},
            self._body(),
        )
        status, headers, body = proxy._handle(rec)
        self._answer(status, headers, body)

    do_GET = do_POST = do_DELETE = _any
