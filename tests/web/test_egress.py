"""Attack class 1 of issue 14, internal network reach (SSRF): a hostile customer names
servers inside the service's network, and a hostile server answers with secrets.

The service here runs WITHOUT ``YIPPIEMOVE_EGRESS_ALLOW`` (tests/conftest.py sets it for
every other test): the web check, a REST order, a batch line and a hand-made last step
of the web order are refused with a 4xx naming why, for every spelling of an internal
address.  With loopback allowed, a fake TCP server's banner never reaches the customer,
and a closed, a silent and a chatty port look alike.  A name whose DNS answer changes
after the check cannot steer a connection or a job to loopback."""

from __future__ import annotations

import dataclasses
import html
import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.web.conftest import Browser
from tests.web.htmlform import form_fields, with_values
from yippiemove.service.config import Settings
from yippiemove.service.core import Account, Service, ServiceError
from yippiemove.web.app import create_app

API = "/api/v1"
SECRET = "AKIA-internal-banner-secret-5f1e"

#: Spellings of internal addresses; each is what a customer could type as a host.
INTERNAL = [
    "127.0.0.1",
    "10.1.2.3",
    "169.254.169.254",
    "::1",
    "fd00::1",
    "::ffff:127.0.0.1",
    "0",
    "2130706433",
    "0x7f.1",
    "127.1",
    "100.64.0.7",
]


def make(tmp_path: Path, name: str, **settings: Any) -> Service:
    settings.setdefault("egress_allow", "")  # the default: public addresses only
    if "egress_allow" not in {f.name for f in dataclasses.fields(Settings)}:
        settings.pop("egress_allow")  # the code before the policy: nothing is refused
    return Service(Settings.load(tmp_path / name, maintenance_interval=3600.0, **settings))


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[Service]:
    svc = make(tmp_path, "strict")
    try:
        yield svc
    finally:
        svc.close()


def acc(host: str, user: str, port: int = 143) -> dict[str, Any]:
    return {"host": host, "port": port, "security": "tls", "username": user, "password": "pw-1"}


def refused(text: str) -> bool:
    return "this service does not connect there" in text


@pytest.mark.parametrize("host", INTERNAL)
def test_rest_order_naming_an_internal_address_is_refused(strict: Service, host: str) -> None:
    uid = strict.create_user("eve@example.org", "eve's long password")
    h = {"Authorization": f"Bearer {strict.create_token(uid, 'x')}"}
    with TestClient(create_app(strict)) as c:
        r = c.post(
            f"{API}/transfers",
            json={"source": acc(host, "a"), "dest": acc("1.1.1.1", "b")},
            headers=h,
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"].startswith("source.host: "), r.text
        assert refused(r.json()["error"]), r.text
        r = c.post(
            f"{API}/transfers",
            json={"source": acc("1.1.1.1", "a"), "dest": acc(host, "b")},
            headers=h,
        )
        assert r.status_code == 400 and r.json()["error"].startswith("dest.host: "), r.text
    assert strict.list_transfers(uid) == []


def test_batch_lines_naming_internal_addresses_are_refused(strict: Service) -> None:
    lines = [f"{h},993,tls,a,pw,1.1.1.1,993,tls,b,pw" for h in INTERNAL]
    rows, errors = strict.validate_batch_csv("\n".join(lines))
    assert rows == []
    assert len(errors) == len(INTERNAL), errors
    for n, e in enumerate(errors, 1):
        assert e.startswith(f"line {n}: source.host: ") and refused(e), e


def test_web_check_naming_internal_addresses_is_refused(strict: Service) -> None:
    b = Browser(TestClient(create_app(strict)))
    b.signup("eve@example.org")
    page = b.get("/transfers/new").text
    for host in INTERNAL:
        src = {
            "source_preset": "other",
            "source_host": host,
            "source_port": "993",
            "source_security": "tls",
            "source_username": "a",
            "source_password": "pw",
        }
        fields = with_values(form_fields(page, "/transfers/new"), **src, action="check_source")
        r = b.post("/transfers/new", fields)
        assert r.status_code == 400, host
        assert refused(html.unescape(r.text)), (host, html.unescape(r.text)[-3000:])


def test_a_hand_made_last_step_is_checked_again(strict: Service) -> None:
    """The folders step posted without either check: the order is still refused."""
    b = Browser(TestClient(create_app(strict)))
    b.signup("eve@example.org")
    page = b.get("/transfers/new").text
    plan = [{"name": "INBOX", "messages": 1, "bytes": 1, "dest_name": "INBOX", "selected": True}]
    values = {"action": "start", "plan": json.dumps(plan), "folder": "INBOX"}
    for role, host in (("source", "169.254.169.254"), ("dest", "127.0.0.1")):
        values.update(
            {
                f"{role}_preset": "other",
                f"{role}_host": host,
                f"{role}_port": "143",
                f"{role}_security": "starttls",
                f"{role}_username": role,
                f"{role}_password": "pw",
            }
        )
    fields = [(k, v) for k, v in form_fields(page, "/transfers/new") if k not in values]
    r = b.post("/transfers/new", fields + list(values.items()))
    assert r.status_code == 400, r.status_code
    assert refused(html.unescape(r.text))
    uid = strict.authenticate("eve@example.org", "correct horse battery")
    assert uid is not None and strict.list_transfers(uid) == []


def test_rerun_checks_the_policy_of_today(tmp_path: Path) -> None:
    """A job ordered while loopback was allowed is not re-run once it is not."""
    svc = make(tmp_path, "d", egress_allow="127.0.0.0/8")
    uid = svc.create_user("eve@example.org", "eve's long password")
    src = Account("127.0.0.1", 1143, "starttls", "a", "pw")
    view = svc.create_transfer(uid, src, Account("127.0.0.1", 1143, "starttls", "b", "pw"))
    svc.cancel_transfer(uid, view.id)
    svc.close()
    svc = make(tmp_path, "d")
    try:
        with pytest.raises(ServiceError, match="does not connect there"):
            svc.rerun_transfer(uid, view.id)
    finally:
        svc.close()


# -- hostile servers on an allowed network ------------------------------------------------


class FakeTcp:
    """A TCP server on ``host``: ``banner`` sent to each connection (None: silent);
    counts the connections."""

    def __init__(self, banner: bytes | None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.banner = banner
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            if self.banner is not None:
                with_suppress(conn.sendall, self.banner)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def with_suppress(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except OSError:
        pass


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_banner_never_reaches_the_customer_and_ports_look_alike(tmp_path: Path) -> None:
    svc = make(tmp_path, "allow", egress_allow="127.0.0.0/8")
    svc.check_connect_timeout = 1.0  # the silent port: a short wait
    chatty = FakeTcp(f"SSH-2.0-OpenSSH_9.6 token={SECRET}\r\n".encode())
    other = FakeTcp(f"HTTP/1.1 400 Bad Request\r\nX-Secret: {SECRET}\r\n\r\n".encode())
    silent = FakeTcp(None)
    try:
        b = Browser(TestClient(create_app(svc)))
        b.signup("eve@example.org")
        page = b.get("/transfers/new").text
        said = {}
        for name, port in [
            ("chatty", chatty.port),
            ("other", other.port),
            ("silent", silent.port),
            ("closed", closed_port()),
        ]:
            for security in ("starttls", "tls"):
                src = {
                    "source_preset": "other",
                    "source_host": "127.0.0.1",
                    "source_port": str(port),
                    "source_security": security,
                    "source_username": "a",
                    "source_password": "pw",
                }
                fields = with_values(
                    form_fields(page, "/transfers/new"), **src, action="check_source"
                )
                r = b.post("/transfers/new", fields)
                text = html.unescape(r.text)
                assert r.status_code == 400, (name, security)
                assert SECRET not in text and "OpenSSH" not in text and "HTTP/1.1" not in text
                m = re.search(r"We could not use the source mailbox: ([^<]*)", text)
                assert m is not None, text[-2000:]
                said[name, security] = m.group(1).replace(str(port), "PORT").strip()
        # One message for "not an IMAP server here", whatever the port did.
        assert len(set(said.values())) == 1, said
        assert "did not answer as an IMAP server" in next(iter(said.values()))
    finally:
        for f in (chatty, other, silent):
            f.close()
        svc.close()


def test_an_imap_refusal_is_shown_capped_and_without_control_bytes(tmp_path: Path) -> None:
    """A BYE greeting's text is the server's IMAP words: shown, but capped and cleaned."""
    svc = make(tmp_path, "allow", egress_allow="127.0.0.0/8")
    bye = FakeTcp(b"* BYE go away \x1b[31m" + b"x" * 5000 + b"\r\n")
    try:
        with pytest.raises(ServiceError) as info:
            import asyncio

            asyncio.run(svc.check_account(Account("127.0.0.1", bye.port, "none", "a", "pw")))
        text = str(info.value)
        assert "go away" in text and "\x1b" not in text and len(text) < 600, text
    finally:
        bye.close()
        svc.close()


# -- a name whose DNS answer changes ------------------------------------------------------


def test_the_check_connects_to_the_address_it_checked(tmp_path: Path) -> None:
    """``mail.customer.test`` is "public" (127.0.0.2, allowed) when checked, loopback
    (127.0.0.1, not allowed) on any later lookup: the check connects to 127.0.0.2."""
    public = FakeTcp(b"* BYE public server\r\n", host="127.0.0.2")
    internal = FakeTcp(b"* OK internal\r\n", host="127.0.0.1", port=public.port)
    answers = [["127.0.0.2"]]

    def rebinding(host: str, port: int) -> list[str]:
        assert host == "mail.customer.test"
        return answers.pop(0) if answers else ["127.0.0.1"]

    svc = make(tmp_path, "dns", egress_allow="127.0.0.2/32", allow_insecure_hosts=True)
    svc.resolve = rebinding
    try:
        import asyncio

        with pytest.raises(ServiceError, match="public server"):
            asyncio.run(
                svc.check_account(Account("mail.customer.test", public.port, "none", "a", "pw"))
            )
        assert public.accepted == 1 and internal.accepted == 0
        # The next lookup says loopback: refused, and nothing connects there.
        with pytest.raises(ServiceError, match=r"\(= 127\.0\.0\.1\) is a loopback address"):
            asyncio.run(
                svc.check_account(Account("mail.customer.test", public.port, "none", "a", "pw"))
            )
        assert internal.accepted == 0
    finally:
        public.close()
        internal.close()
        svc.close()


def test_a_batch_resolves_each_server_once(strict: Service) -> None:
    """900 lines naming the same servers (a batch holds at most ``batch_max_transfers``,
    1,000 by default): three lookups, not 1,800 (each may be a slow DNS query)."""
    looked_up: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return {"old.example": ["93.184.216.34"], "inside.example": ["10.0.0.8"]}[host]

    strict.resolve = resolver
    lines = [f"old.example,993,tls,u{i},pw,inside.example,993,tls,u{i},pw" for i in range(3)]
    lines += [f"old.example,993,tls,v{i},pw,old.example,143,starttls,w{i},pw" for i in range(897)]
    rows, errors = strict.validate_batch_csv("\n".join(lines))
    assert len(rows) == 897 and len(errors) == 3
    assert all("dest.host: inside.example (= 10.0.0.8) is a private address" in e for e in errors)
    assert sorted(looked_up) == ["inside.example", "old.example", "old.example"]
