"""The pages over the FakeService: accounts, the 3-step order, job page and live events,
tokens, batch upload, CSRF, tenant isolation, headers."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.web.conftest import Browser, new_browser
from tests.web.fakes import SAMPLE_FOLDERS, FakeService, FolderInfo
from tests.web.htmlform import form_fields, with_values

WEB = Path(__file__).resolve().parents[2] / "src" / "yippiemove" / "web"


# -- helpers ----------------------------------------------------------------------------


def order(
    b: Browser,
    *,
    source: dict[str, str] | None = None,
    dest: dict[str, str] | None = None,
    folders: list[str] | None = None,
) -> Any:
    """Walk the three steps like a browser: fill, submit, carry what the page carries."""
    page = b.get("/transfers/new").text
    fields = with_values(
        form_fields(page, "/transfers/new"),
        **(
            source
            or {
                "source_preset": "other",
                "source_host": "imap.old.example",
                "source_port": "993",
                "source_security": "tls",
                "source_username": "ada@old.example",
                "source_password": "old-secret",
            }
        ),
        action="check_source",
    )
    r = b.post("/transfers/new", fields)
    assert r.status_code == 200, r.text
    fields = with_values(
        form_fields(r.text, "/transfers/new"),
        **(
            dest
            or {
                "dest_preset": "fastmail",
                "dest_username": "ada@fastmail.com",
                "dest_password": "new-secret",
            }
        ),
        action="check_dest",
    )
    r = b.post("/transfers/new", fields)
    assert r.status_code == 200, r.text
    fields = form_fields(r.text, "/transfers/new")
    if folders is not None:
        fields = with_values(fields, folder=folders)
    return b.post("/transfers/new", with_values(fields, action="start"))


def job_id_of(r: Any) -> str:
    assert r.status_code == 303, r.text
    m = re.fullmatch(r"/transfers/([0-9a-f]+)", r.headers["location"])
    assert m, r.headers["location"]
    return m.group(1)


# -- public pages, sign up, log in --------------------------------------------------------


def test_home_and_redirect_when_logged_in(client: TestClient, alice: Browser) -> None:
    r = client.get("/")
    assert r.status_code == 200 and "Move your mailbox" in r.text
    r = alice.client.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/transfers"


@pytest.mark.parametrize(
    "path", ["/transfers", "/transfers/new", "/transfers/abc", "/tokens", "/batch"]
)
def test_pages_need_a_login(client: TestClient, path: str) -> None:
    r = client.get(path, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == f"/login?next={path}"


def test_signup_validation(app: FastAPI) -> None:
    b = new_browser(app)
    b.get("/signup")
    r = b.post("/signup", {"email": "nope", "password": "short", "password2": "short"})
    assert r.status_code == 400
    assert "Enter your e-mail address" in r.text and "at least 12 characters" in r.text
    r = b.post(
        "/signup",
        {"email": "x@example.org", "password": "long enough 1", "password2": "long enough 2"},
    )
    assert r.status_code == 400 and "not the same" in r.text
    assert 'value="x@example.org"' in r.text  # kept, passwords are not


def test_signup_twice_says_so(app: FastAPI, alice: Browser) -> None:
    b = new_browser(app)
    b.get("/signup")
    pw = "another password"
    r = b.post("/signup", {"email": "alice@example.org", "password": pw, "password2": pw})
    assert r.status_code == 400
    assert "exists already. Log in instead." in r.text


def test_signup_logs_in_and_goes_to_new_transfer(app: FastAPI, fake: FakeService) -> None:
    b = new_browser(app)
    b.get("/signup")
    pw = "correct horse battery"
    r = b.post("/signup", {"email": "new@example.org", "password": pw, "password2": pw})
    assert r.status_code == 303 and r.headers["location"] == "/transfers/new"
    r = b.get("/transfers/new")
    assert r.status_code == 200 and "new@example.org" in r.text and "Welcome" in r.text


def test_login_logout(app: FastAPI, alice: Browser) -> None:
    b = new_browser(app)
    b.get("/login?next=/tokens")
    r = b.post("/login", {"email": "alice@example.org", "password": "wrong", "next": "/tokens"})
    assert r.status_code == 400 and "Wrong e-mail address or password" in r.text
    r = b.post(
        "/login",
        {"email": "alice@example.org", "password": "correct horse battery", "next": "/tokens"},
    )
    assert r.status_code == 303 and r.headers["location"] == "/tokens"
    assert b.get("/tokens").status_code == 200
    r = b.post("/logout", {})
    assert r.status_code == 303
    assert b.client.get("/tokens", follow_redirects=False).status_code == 303


@pytest.mark.parametrize(
    "nxt", ["//evil.example/x", "https://evil.example/", "/\\evil", "javascript:x"]
)
def test_login_never_redirects_elsewhere(app: FastAPI, alice: Browser, nxt: str) -> None:
    b = new_browser(app)
    b.get("/login")
    r = b.post(
        "/login", {"email": "alice@example.org", "password": "correct horse battery", "next": nxt}
    )
    assert r.status_code == 303 and r.headers["location"] == "/transfers"


def test_login_is_throttled(app: FastAPI, alice: Browser) -> None:
    b = new_browser(app)
    b.get("/login")
    for _ in range(10):
        assert b.post("/login", {"email": "alice@example.org", "password": "x"}).status_code == 400
    r = b.post("/login", {"email": "alice@example.org", "password": "correct horse battery"})
    assert r.status_code == 429 and "Too many failed attempts" in r.text


def test_session_cookie_flags(app: FastAPI) -> None:
    b = new_browser(app)
    r = b.get("/login")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("yippiemove_session=")
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()


# -- CSRF -------------------------------------------------------------------------------


POST_ROUTES = [
    (
        "/signup",
        {"email": "z@example.org", "password": "long password", "password2": "long password"},
    ),
    ("/login", {"email": "alice@example.org", "password": "correct horse battery"}),
    ("/logout", {}),
    ("/transfers/new", {"action": "check_source"}),
    ("/transfers/JOB/cancel", {}),
    ("/transfers/JOB/rerun", {}),
    ("/tokens", {"name": "x"}),
    ("/tokens/TOKEN/revoke", {}),
    ("/batch", {}),
]


@pytest.mark.parametrize(("path", "data"), POST_ROUTES)
@pytest.mark.parametrize("token", [None, "", "forged-token-value-000000000000"])
def test_every_form_checks_the_csrf_token(
    app: FastAPI,
    alice: Browser,
    fake: FakeService,
    path: str,
    data: dict[str, str],
    token: str | None,
) -> None:
    jid = job_id_of(order(alice))
    uid = fake.authenticate("alice@example.org", "correct horse battery")
    assert uid is not None
    fake.create_token(uid, "keep")
    (tid,) = [t["id"] for t in fake.list_tokens(uid)]
    path = path.replace("JOB", jid).replace("TOKEN", str(tid))
    form = dict(data)
    if token is not None:
        form["csrf_token"] = token
    before = (len(fake.users), len(fake.jobs), len(fake.tokens), fake.jobs[jid].status)
    r = alice.post(path, form, csrf=False)
    assert r.status_code == 403, (path, r.status_code)
    assert "This form has expired" in r.text
    assert (len(fake.users), len(fake.jobs), len(fake.tokens), fake.jobs[jid].status) == before
    assert alice.get("/transfers").status_code == 200  # still logged in


def test_csrf_token_of_another_session_is_refused(
    app: FastAPI, alice: Browser, bob: Browser
) -> None:
    jid = job_id_of(order(alice))
    r = alice.post(f"/transfers/{jid}/cancel", {"csrf_token": bob.csrf}, csrf=False)
    assert r.status_code == 403


def test_multipart_form_checks_csrf(alice: Browser, fake: FakeService) -> None:
    r = alice.client.post(
        "/batch",
        files={"file": ("a.csv", b"x")},
        data={"csrf_token": "nope"},
        follow_redirects=False,
    )
    assert r.status_code == 403
    assert not fake.jobs


# -- new transfer: three steps ------------------------------------------------------------


def test_order_through_three_steps(alice: Browser, fake: FakeService) -> None:
    r = order(alice)
    jid = job_id_of(r)
    _uid, src, dst, folders = fake.created[-1]
    assert (src.host, src.port, src.security, src.username, src.password) == (
        "imap.old.example",
        993,
        "tls",
        "ada@old.example",
        "old-secret",
    )
    assert (dst.host, dst.port, dst.security) == ("imap.fastmail.com", 993, "tls")
    assert folders == {"include": [], "exclude": ["Spam", "Trash"]}  # the default selection
    checked = [(a.host, a.username) for a in fake.checked]
    assert checked == [
        ("imap.old.example", "ada@old.example"),  # step 1: the source alone
        ("imap.old.example", "ada@old.example"),  # step 2: both, for the exact names
        ("imap.fastmail.com", "ada@fastmail.com"),
    ]
    page = alice.get(f"/transfers/{jid}")
    assert page.status_code == 200 and "on its way" in page.text


def test_folder_step_lists_every_folder_with_counts_sizes_names_and_defaults(
    alice: Browser,
) -> None:
    page = alice.get("/transfers/new").text
    fields = with_values(
        form_fields(page, "/transfers/new"),
        source_preset="gmail",
        source_username="ada@gmail.com",
        source_password="pw",
        action="check_source",
    )
    r = alice.post("/transfers/new", fields)
    assert "8 folders · 5,877 messages · 807 MB" in r.text
    fields = with_values(
        form_fields(r.text, "/transfers/new"),
        dest_preset="other",
        dest_host="mail.new.example",
        dest_port="143",
        dest_security="starttls",
        dest_username="ada",
        dest_password="pw2",
        action="check_dest",
    )
    r = alice.post("/transfers/new", fields)
    html = r.text
    rows = re.findall(r'<tr class="(unselected)?">(.*?)</tr>', html, re.S)
    assert len(rows) == len(SAMPLE_FOLDERS)
    # INBOX first, then by name: parents before their subfolders.
    order = ["INBOX", "Archive", "Archive/2019", "Archive/2020", "Drafts", "Sent", "Spam", "Trash"]
    by_name = {f.name: f for f in SAMPLE_FOLDERS}
    for name, (unselected, row) in zip(order, rows, strict=True):
        f = by_name[name]
        assert f">{f.name}</label>" in row
        assert f"{f.messages:,}" in row
        assert f.dest_name in row
        assert bool(unselected) == (not f.selected_by_default)
        checked = "checked>" in row
        assert checked == f.selected_by_default
    assert "→ Junk" in html  # Spam is renamed on the destination
    assert "not selected by default" in html
    assert "187 MB" in html and "301 MB" in html
    assert 'class="foldername depth-1">Archive/2019' in html


@pytest.mark.parametrize(
    ("ticked", "expected"),
    [
        ([f.name for f in SAMPLE_FOLDERS], None),
        (["INBOX"], {"include": ["INBOX"], "exclude": []}),
        (
            ["INBOX", "Sent", "Drafts", "Archive", "Archive/2020", "Spam", "Trash"],
            {"include": [], "exclude": ["Archive/2019"]},
        ),
        (
            ["INBOX", "Sent", "Drafts", "Archive/2019", "Archive/2020", "Spam", "Trash"],
            {"include": [], "exclude": ["[A]rchive"]},
        ),
    ],
)
def test_folder_selection_becomes_include_or_exclude(
    alice: Browser, fake: FakeService, ticked: list[str], expected: dict[str, list[str]] | None
) -> None:
    job_id_of(order(alice, folders=ticked))
    assert fake.created[-1][3] == expected


def test_no_folder_selected_is_refused(alice: Browser, fake: FakeService) -> None:
    r = order(alice, folders=[])
    assert r.status_code == 400
    assert "Select at least one folder" in r.text
    assert not fake.created


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"source_preset": ""}, "Choose the source mailbox"),
        ({"source_preset": "other", "source_host": ""}, "Enter the source server"),
        ({"source_preset": "other", "source_host": "imap://x.example"}, "is not a host name"),
        (
            {"source_preset": "other", "source_host": "x.example", "source_port": "99999"},
            "from 1 to 65535",
        ),
        (
            {"source_preset": "other", "source_host": "x.example", "source_security": "ssl"},
            "Choose how to connect",
        ),
        ({"source_preset": "gmail", "source_username": ""}, "Enter the username"),
        ({"source_preset": "gmail", "source_password": ""}, "Enter the password"),
    ],
)
def test_source_step_explains_bad_input(
    alice: Browser, fake: FakeService, values: dict[str, str], message: str
) -> None:
    page = alice.get("/transfers/new").text
    base = {
        "source_preset": "other",
        "source_host": "imap.old.example",
        "source_port": "993",
        "source_security": "tls",
        "source_username": "ada",
        "source_password": "pw",
    }
    base.update(values)
    r = alice.post(
        "/transfers/new",
        with_values(form_fields(page, "/transfers/new"), **base, action="check_source"),
    )
    assert r.status_code == 400
    assert message in r.text
    assert not fake.checked  # nothing was tried with bad input


@pytest.mark.parametrize(
    ("host", "password", "message"),
    [
        ("mail.unreachable.invalid", "pw", "host 'mail.unreachable.invalid' not found"),
        ("imap.old.example", "wrong", "[AUTHENTICATIONFAILED] Authentication failed. Check"),
    ],
)
def test_account_check_failures_are_shown(
    alice: Browser, host: str, password: str, message: str
) -> None:
    page = alice.get("/transfers/new").text
    r = alice.post(
        "/transfers/new",
        with_values(
            form_fields(page, "/transfers/new"),
            source_preset="other",
            source_host=host,
            source_username="ada",
            source_password=password,
            action="check_source",
        ),
    )
    assert r.status_code == 400
    text = html.unescape(r.text)
    assert f"We could not use the source mailbox: {message}" in text
    assert 'name="source_host" value="' + host in r.text  # typed values are kept


def test_destination_check_failure_and_same_account(alice: Browser) -> None:
    page = alice.get("/transfers/new").text
    src = {
        "source_preset": "other",
        "source_host": "imap.old.example",
        "source_username": "ada",
        "source_password": "pw",
    }
    r = alice.post(
        "/transfers/new",
        with_values(form_fields(page, "/transfers/new"), **src, action="check_source"),
    )
    step2 = form_fields(r.text, "/transfers/new")
    r = alice.post(
        "/transfers/new",
        with_values(
            step2,
            dest_preset="yahoo",
            dest_username="ada@yahoo.com",
            dest_password="wrong",
            action="check_dest",
        ),
    )
    assert r.status_code == 400 and "We could not use the destination mailbox" in r.text
    r = alice.post(
        "/transfers/new",
        with_values(
            step2,
            dest_preset="other",
            dest_host="IMAP.OLD.EXAMPLE",
            dest_port="993",
            dest_security="tls",
            dest_username="ada",
            dest_password="pw",
            action="check_dest",
        ),
    )
    assert r.status_code == 400 and "same mailbox as the source" in r.text


def test_back_buttons_keep_what_was_typed(alice: Browser) -> None:
    page = alice.get("/transfers/new").text
    r = alice.post(
        "/transfers/new",
        with_values(
            form_fields(page, "/transfers/new"),
            source_preset="icloud",
            source_username="ada@icloud.com",
            source_password="pw",
            action="check_source",
        ),
    )
    r = alice.post(
        "/transfers/new", with_values(form_fields(r.text, "/transfers/new"), action="back_source")
    )
    assert r.status_code == 200
    assert (
        'value="icloud" data-hint' in r.text
        and "checked" in r.text.split('value="icloud"')[1][:200]
    )
    assert 'value="ada@icloud.com"' in r.text


def test_tampered_folder_list_starts_over(alice: Browser, fake: FakeService) -> None:
    page = alice.get("/transfers/new").text
    r = alice.post(
        "/transfers/new",
        with_values(
            form_fields(page, "/transfers/new"),
            source_preset="gmail",
            source_username="a@gmail.com",
            source_password="pw",
            action="check_source",
        ),
    )
    fields = with_values(
        form_fields(r.text, "/transfers/new"),
        plan="{not json",
        dest_preset="fastmail",
        dest_username="a@fastmail.com",
        dest_password="pw",
        action="start",
    )
    r = alice.post("/transfers/new", fields)
    assert r.status_code == 400 and "check the source mailbox again" in r.text
    assert not fake.created


def test_service_refusal_at_start_is_shown(alice: Browser, fake: FakeService) -> None:
    from tests.web.fakes import ServiceError

    def refuse(*args: Any) -> Any:
        raise ServiceError("dest.security: 'none' is only allowed for loopback hosts")

    fake.create_transfer = refuse  # type: ignore[method-assign]
    r = order(alice)
    assert r.status_code == 400
    text = html.unescape(r.text)
    assert "The transfer could not be started: dest.security: 'none' is only allowed" in text
    assert 'name="folder"' in r.text  # still on the folder step, selection kept


def test_check_refuses_plain_text_to_a_remote_host(alice: Browser, fake: FakeService) -> None:
    page = alice.get("/transfers/new").text
    r = alice.post(
        "/transfers/new",
        with_values(
            form_fields(page, "/transfers/new"),
            source_preset="other",
            source_host="mail.old.example",
            source_port="143",
            source_security="none",
            source_username="ada",
            source_password="pw",
            action="check_source",
        ),
    )
    assert r.status_code == 400
    assert "only allowed for loopback hosts" in html.unescape(r.text)


# -- job page, events, cancel, rerun, report, receipt -----------------------------------


def test_job_page_shows_progress_and_no_password(alice: Browser, fake: FakeService) -> None:
    jid = job_id_of(order(alice))
    fake.advance(jid, 0.5)
    r = alice.get(f"/transfers/{jid}")
    html = r.text
    assert r.status_code == 200
    assert "ada@old.example" in html and "imap.fastmail.com" in html
    assert "old-secret" not in html and "new-secret" not in html
    assert "All except Spam, Trash" in html
    assert 'data-status="running"' in html
    data = json.loads(
        re.search(
            r'<script type="application/json" id="job-data">(.*?)</script>', html, re.S
        ).group(1)
    )  # type: ignore[union-attr]
    assert data["id"] == jid and data["progress"]["per_folder"]
    assert 'data-folder="Archive/2019"' in html
    assert "data-rate-graph" in html
    assert "Cancel transfer" in html


def read_events(client: TestClient, url: str) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    with client.stream("GET", url) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-store"
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name:
                events.append((name, json.loads(line[6:])))
                name = None
    return events


def test_events_stream_progress_until_the_end(
    app: FastAPI, alice: Browser, fake: FakeService
) -> None:
    jid = job_id_of(order(alice))
    polls = 0
    real_get = fake.get_transfer

    def moving(uid: int, job_id: str) -> Any:
        nonlocal polls
        polls += 1
        if polls == 3:
            fake.advance(jid, 0.3)
        elif polls == 5:
            fake.advance(jid, 0.8)
        elif polls == 7:
            fake.finish(jid)
        return real_get(uid, job_id)

    fake.get_transfer = moving  # type: ignore[method-assign]
    events = read_events(alice.client, f"/transfers/{jid}/events")
    names = [n for n, _ in events]
    assert names[-1] == "end" and events[-1][1] == "done"
    progress = [d for n, d in events if n == "progress"]
    statuses = [d["status"] for d in progress]
    assert statuses[0] == "queued" and statuses[-1] == "done" and "running" in statuses
    done = [d["progress"]["messages_done"] for d in progress]
    assert done == sorted(done) and len(set(done)) == len(done)  # only changes are sent
    assert all("password" not in json.dumps(d) for d in progress)


def test_summary_fragment_report_json_and_receipt(alice: Browser, fake: FakeService) -> None:
    jid = job_id_of(order(alice))
    frag = alice.get(f"/transfers/{jid}/summary")
    assert frag.status_code == 200 and "<section" not in frag.text  # nothing while running
    assert alice.get(f"/transfers/{jid}/receipt").status_code == 404
    fake.add_failure(jid, "INBOX", 4711, "[LIMIT] too large")
    fake.finish(jid)
    frag = alice.get(f"/transfers/{jid}/summary").text
    assert "Finished, with 1 message not copied" in frag
    assert "[LIMIT] too large" in frag and "4711" in frag
    assert f"/transfers/{jid}/receipt" in frag and f"/transfers/{jid}/report.json" in frag
    page = alice.get(f"/transfers/{jid}").text
    assert "Run again" in page and "Report" in page
    r = alice.get(f"/transfers/{jid}/report.json")
    assert r.status_code == 200 and r.json()["totals"]["failed"] == 1
    assert "attachment" in r.headers["content-disposition"]
    r = alice.get(f"/transfers/{jid}/receipt")
    assert r.status_code == 200 and r.content.startswith(b"SQLite format 3")


def test_summary_lists_messages_the_server_stored_altered(
    alice: Browser, fake: FakeService
) -> None:
    """Issue 13: all there, some stored altered by the server: "All done", said, listed."""
    jid = job_id_of(order(alice))
    for uid in (1, 2):
        fake.add_altered(jid, "INBOX", uid, "line endings CRLF -> LF")
    fake.add_altered(jid, "Sent", 3, "8-bit header bytes replaced by '?'")
    fake.finish(jid)
    frag = alice.get(f"/transfers/{jid}/summary").text
    assert "All done" in frag and "3 of them the destination server stored altered" in frag
    assert "Stored, altered by the destination server" in frag
    assert "line endings CRLF -&gt; LF" in frag and "8-bit header bytes replaced by" in frag


@pytest.mark.parametrize(
    ("how", "title"),
    [("done", "All done"), ("failed", "The transfer stopped"), ("cancelled", "Cancelled")],
)
def test_outcome_of_each_ending(alice: Browser, fake: FakeService, how: str, title: str) -> None:
    jid = job_id_of(order(alice))
    if how == "done":
        fake.finish(jid)
    elif how == "failed":
        fake.fail(jid, "connection lost 3 times")
    else:
        fake.cancel_transfer(fake.jobs[jid].user_id, jid)
    html = alice.get(f"/transfers/{jid}").text
    assert title in html
    if how == "failed":
        assert "connection lost 3 times" in html


def test_cancel_and_rerun_from_the_page(alice: Browser, fake: FakeService) -> None:
    jid = job_id_of(order(alice))
    alice.get(f"/transfers/{jid}")
    r = alice.post(f"/transfers/{jid}/cancel", {})
    assert r.status_code == 303 and r.headers["location"] == f"/transfers/{jid}"
    assert fake.jobs[jid].status == "cancelled"
    page = alice.get(f"/transfers/{jid}").text
    assert "The transfer is cancelled" in page
    r = alice.post(f"/transfers/{jid}/cancel", {})
    assert (
        "Could not cancel: the transfer is already cancelled"
        in alice.get(r.headers["location"]).text
    )
    r = alice.post(f"/transfers/{jid}/rerun", {})
    assert r.status_code == 303 and fake.jobs[jid].status == "queued"
    assert "Running again" in alice.get(r.headers["location"]).text
    r = alice.post(f"/transfers/{jid}/rerun", {})
    assert "still running" in alice.get(r.headers["location"]).text


def test_transfer_list_filters(alice: Browser, fake: FakeService) -> None:
    ids = [job_id_of(order(alice)) for _ in range(4)]
    fake.finish(ids[0])
    fake.fail(ids[1], "x")
    fake.cancel_transfer(fake.jobs[ids[2]].user_id, ids[2])
    fake.advance(ids[3], 0.1)

    def listed(status: str) -> set[str]:
        html = alice.get("/transfers" + (f"?status={status}" if status else "")).text
        return set(re.findall(r'data-job="([0-9a-f]+)"', html))

    assert listed("") == set(ids)
    assert listed("running") == {ids[3]}
    assert listed("finished") == {ids[0]}
    assert listed("failed") == {ids[1]}
    assert listed("cancelled") == {ids[2]}
    assert listed("nonsense") == set(ids)
    html = alice.get("/transfers").text
    assert "old-secret" not in html
    assert re.search(r'Running <span class="count">1</span>', html)


# -- isolation through the pages ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", ""),
        ("GET", "/events"),
        ("GET", "/summary"),
        ("GET", "/report.json"),
        ("GET", "/receipt"),
        ("POST", "/cancel"),
        ("POST", "/rerun"),
    ],
)
def test_bob_cannot_reach_alices_job_through_any_page(
    alice: Browser, bob: Browser, fake: FakeService, method: str, suffix: str
) -> None:
    jid = job_id_of(order(alice))
    fake.finish(jid)
    if method == "GET":
        theirs = bob.client.get(f"/transfers/{jid}{suffix}", follow_redirects=False)
        missing = bob.client.get(f"/transfers/feedfacefeedface{suffix}", follow_redirects=False)
    else:
        theirs = bob.post(f"/transfers/{jid}{suffix}", {})
        missing = bob.post(f"/transfers/feedfacefeedface{suffix}", {})
    assert theirs.status_code == missing.status_code == 404
    assert theirs.text.replace(jid, "X") == missing.text.replace("feedfacefeedface", "X")
    assert "ada@old.example" not in theirs.text
    assert fake.jobs[jid].status == "done"
    assert jid not in bob.get("/transfers").text
    assert jid not in bob.get("/transfers?status=finished").text


def test_tokens_are_per_customer(alice: Browser, bob: Browser, fake: FakeService) -> None:
    alice.get("/tokens")
    r = alice.get(alice.post("/tokens", {"name": "alice script"}).headers["location"])
    assert r.status_code == 200
    token = re.search(r'<code class="token" id="new-token">([^<]+)</code>', r.text).group(1)  # type: ignore[union-attr]
    assert token.startswith("ym_")
    (t,) = fake.tokens.values()
    assert "alice script" not in bob.get("/tokens").text
    r = bob.post(f"/tokens/{t['id']}/revoke", {})
    assert "Could not revoke" in bob.get(r.headers["location"]).text
    assert t["id"] in fake.tokens


# -- tokens -----------------------------------------------------------------------------


def test_token_is_shown_once_and_can_be_revoked(
    alice: Browser, fake: FakeService, client: TestClient
) -> None:
    alice.get("/tokens")
    r = alice.get(alice.post("/tokens", {"name": "migration script"}).headers["location"])
    token = re.search(r'id="new-token">([^<]+)<', r.text).group(1)  # type: ignore[union-attr]
    assert "shown only this once" in r.text
    assert r.headers["cache-control"] == "no-store"
    listing = alice.get("/tokens").text
    assert "migration script" in listing and token not in listing
    assert (
        client.get("/api/v1/transfers", headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )
    (tid,) = fake.tokens
    r = alice.post(f"/tokens/{tid}/revoke", {})
    assert "The token is revoked" in alice.get(r.headers["location"]).text
    assert (
        client.get("/api/v1/transfers", headers={"Authorization": f"Bearer {token}"}).status_code
        == 401
    )
    assert alice.post("/tokens/notanumber/revoke", {}).status_code == 404


# -- batch ------------------------------------------------------------------------------

HEADER = (
    "source_host,source_port,source_security,source_username,source_password,"
    "dest_host,dest_port,dest_security,dest_username,dest_password\n"
)


def line(n: int, port: str = "993", password: str = "pw") -> str:
    return (
        f"imap.old.example,{port},tls,u{n}@old.example,{password},"
        f"imap.new.example,993,tls,u{n}@new.example,pw2\n"
    )


def upload(
    b: Browser, content: bytes, *, skip_bad: bool = False, name: str = "mailboxes.csv"
) -> Any:
    b.get("/batch")
    data = {"csrf_token": b.csrf}
    if skip_bad:
        data["skip_bad"] = "1"
    # A batch that started something answers with a redirect (POST/redirect/GET).
    return b.client.post(
        "/batch", data=data, files={"file": (name, content, "text/csv")}, follow_redirects=True
    )


def test_batch_creates_every_transfer(alice: Browser, fake: FakeService) -> None:
    r = upload(alice, (HEADER + line(1) + line(2) + line(3)).encode())
    assert r.status_code == 200, r.text
    assert "3 transfers started" in r.text
    assert sorted(s.username for _, s, _, _ in fake.created) == [
        "u1@old.example",
        "u2@old.example",
        "u3@old.example",
    ]
    assert "pw2" not in r.text


def test_batch_reports_bad_lines_by_number_and_starts_nothing(
    alice: Browser, fake: FakeService
) -> None:
    csv = HEADER + line(1) + line(2, port="99999") + line(3, password="") + line(4)
    r = upload(alice, csv.encode())
    assert r.status_code == 400
    assert "line 3: source_port: must be 1-65535" in r.text
    assert "line 4: source_password: must not be empty" in r.text
    assert "2 lines of mailboxes.csv have problems. Nothing was started" in r.text
    assert "2 other lines are fine" in r.text
    assert not fake.created
    r = upload(alice, csv.encode(), skip_bad=True)
    assert r.status_code == 200
    assert "2 transfers started" in r.text and "line 3:" in r.text
    assert len(fake.created) == 2


@pytest.mark.parametrize("size", [1024 * 1024 + 1, 1024 * 1024 + 60 * 1024, 3 * 1024 * 1024])
def test_batch_upload_over_1_mb_is_refused_clearly(
    alice: Browser, fake: FakeService, size: int
) -> None:
    content = (HEADER + line(1) * (size // len(line(1)) + 1)).encode()[:size]
    r = upload(alice, content)
    assert r.status_code == 413
    assert "larger than 1 MB" in r.text and "Split it" in r.text
    assert "<form" in r.text  # the batch page again, ready for the next try
    assert not fake.created


def test_batch_upload_of_exactly_1_mb_is_accepted(alice: Browser, fake: FakeService) -> None:
    body = HEADER + line(1)
    content = (body + "\n" * (1024 * 1024 - len(body))).encode()
    r = upload(alice, content)
    assert r.status_code == 200, r.text
    assert len(fake.created) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe\x00\x01not utf8", "not UTF-8"),
        (b"", "the file is empty"),
        (HEADER.encode(), "no mailbox pairs"),
        (b"a,b,c\n1,2,3\n", "missing column"),
    ],
)
def test_batch_bad_files(alice: Browser, fake: FakeService, content: bytes, message: str) -> None:
    r = upload(alice, content)
    assert r.status_code == 400
    assert message in r.text
    assert not fake.created


def test_batch_csv_the_service_cannot_parse_is_400(alice: Browser, fake: FakeService) -> None:
    import csv as csvmod

    def explode(text: str) -> Any:
        raise csvmod.Error("field larger than field limit (131072)")

    fake.validate_batch_csv = explode  # type: ignore[method-assign]
    r = upload(alice, (HEADER + line(1)).encode())
    assert r.status_code == 400
    assert "could not be read as CSV: field larger than field limit" in r.text


def test_batch_without_a_file(alice: Browser) -> None:
    alice.get("/batch")
    r = alice.post("/batch", {})
    assert r.status_code == 400 and "Choose a CSV file" in r.text


# -- headers, static, nothing from elsewhere --------------------------------------------


def test_security_headers(alice: Browser) -> None:
    r = alice.get("/transfers")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"
    s = alice.client.get("/static/style.css")
    assert s.status_code == 200 and "no-store" not in s.headers.get("cache-control", "")


def test_nothing_loads_from_the_internet(alice: Browser, fake: FakeService) -> None:
    jid = job_id_of(order(alice))
    fake.finish(jid)
    pages = ["/transfers", "/transfers/new", f"/transfers/{jid}", "/tokens", "/batch"]
    for path in pages:
        html = alice.get(path).text
        for attr in re.findall(r'(?:src|href|action)="([^"]*)"', html):
            assert not re.match(r"(https?:)?//", attr), (path, attr)
        assert "<script>" not in html  # no inline scripts (CSP forbids them anyway)
        assert not re.search(r'\sstyle="', html)  # no inline styles (CSP)
        assert not re.search(r"\son[a-z]+=", html)  # no inline handlers (CSP)
    for f in (WEB / "static").iterdir():
        text = f.read_text()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), f
        assert "@import" not in text


def test_templates_and_static_are_in_the_package() -> None:
    names = {p.name for p in (WEB / "templates").iterdir()}
    assert {"base.html", "new.html", "job.html", "_summary.html", "batch.html"} <= names
    assert {"style.css", "app.js", "job.js"} <= {p.name for p in (WEB / "static").iterdir()}


def test_unknown_page_is_a_friendly_404(alice: Browser) -> None:
    r = alice.get("/nope")
    assert r.status_code == 404 and "There is no such page" in r.text


def test_check_account_errors_never_500(alice: Browser, fake: FakeService) -> None:
    async def broken(account: Any, **kw: Any) -> list[FolderInfo]:
        raise RuntimeError("a bug in the backend")

    fake.check_account = broken  # type: ignore[method-assign]
    page = alice.get("/transfers/new").text
    r = alice.post(
        "/transfers/new",
        with_values(
            form_fields(page, "/transfers/new"),
            source_preset="gmail",
            source_username="a@gmail.com",
            source_password="pw",
            action="check_source",
        ),
    )
    assert r.status_code == 400
    assert "something went wrong on our side" in r.text


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("application/x-www-form-urlencoded", b"%%%\xff\xfe=&&=%zz"),
        ("application/x-www-form-urlencoded", b"action=start&plan=%5B%7B%22name%22%3A1%7D%5D"),
        ("application/x-www-form-urlencoded", b"action=start&plan=" + b"9" * 5000),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nbroken"),
        ("multipart/form-data", b"no boundary"),
        ("application/json", b'{"action": "start"}'),
        ("text/plain", b"\x00\x01\x02"),
    ],
)
@pytest.mark.parametrize(
    "path", ["/transfers/new", "/tokens", "/batch", "/signup", "/login", "/transfers/abc/cancel"]
)
def test_garbage_posts_are_never_500(alice: Browser, path: str, ctype: str, body: bytes) -> None:
    alice.get("/transfers")
    r = alice.client.post(
        path,
        content=body,
        headers={"Content-Type": ctype, "X-CSRF-Token": alice.csrf},
        follow_redirects=False,
    )
    assert r.status_code < 500, (path, ctype, r.status_code, r.text[:300])


def test_event_streams_end_when_the_server_stops(
    app: FastAPI, alice: Browser, fake: FakeService
) -> None:
    """A graceful shutdown waits for open responses: live streams must end by themselves."""
    jid = job_id_of(order(alice))
    fake.advance(jid, 0.2)
    app.state.stopping.set()
    events = read_events(alice.client, f"/transfers/{jid}/events")
    assert [n for n, _ in events] == ["progress"]  # one state, then closed: no "end"


def test_shutdown_signals_are_watched_and_passed_on() -> None:
    import os
    import signal
    import threading

    from yippiemove.web.app import _watch_shutdown

    seen: list[int] = []
    original = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    try:
        stopping = threading.Event()
        restore = _watch_shutdown(stopping)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stopping.is_set() and seen == [signal.SIGTERM]  # the server's handler ran too
        restore()
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM, signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, original)


def test_batch_answers_with_a_redirect_and_the_same_file_twice_starts_nothing_more(
    alice: Browser, fake: FakeService
) -> None:
    """POST/redirect/GET: the outcome is shown once; a reload uploads nothing; the same
    file again (pairs still queued) starts nothing and names the transfers under way."""
    fake.one_per_pair = True
    content = (HEADER + line(1) + line(2)).encode()
    alice.get("/batch")
    r = alice.client.post(
        "/batch",
        data={"csrf_token": alice.csrf},
        files={"file": ("m.csv", content, "text/csv")},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/batch"
    page = alice.get("/batch").text
    assert "2 transfers started" in page
    assert "transfers started" not in alice.get("/batch").text  # a reload: shown once
    assert len(fake.created) == 2
    r = upload(alice, content)
    assert r.status_code == 400 and len(fake.created) == 2
    assert r.text.count("already queued or running") == 2
