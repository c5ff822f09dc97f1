"""The folder step's "More options" (issue 17, parity): the date filters, size limit,
renames and "put under a folder" the API and the command line have, on the web, over
the REAL Service and a real Dovecot; errors named by field in the customer's words
(``folders.--since`` must never show)."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.transfer.test_move import make_message
from tests.web.conftest import Browser
from tests.web.htmlform import form_fields, with_values
from yippiemove.service.config import Settings
from yippiemove.service.core import Service
from yippiemove.testing.dovecot import DovecotServer
from yippiemove.web.app import create_app
from yippiemove.web.options import OptionsForm, describe_options, plain


def test_plain_words_never_the_api_or_command_line_spelling() -> None:
    said = plain("folders.--since 2024-01-01 is not before --before 2023-01-01: no message")
    assert said == "“on or after” 2024-01-01 is not before “before” 2023-01-01: no message"
    assert plain("folders.rename: --rename 'A=B' and --rename 'A=C' rename the same folder") == (
        "The rename 'A=B' and the rename 'A=C' rename the same folder"
    )


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"opt_since": "2024-05-01", "opt_before": "2024-01-01"}, "before", "must be later"),
        ({"opt_since": "31.01.2024"}, "since", "Enter a date like 2024-01-31."),
        ({"opt_smaller_mb": "lots"}, "smaller_mb", "Enter a size in MB"),
        ({"opt_smaller_mb": "-3"}, "smaller_mb", "Enter a size in MB"),
        ({"opt_rename": "Work"}, "rename", "Line 1: write each rename as Old name = New name"),
        ({"opt_rename": "A = B\nA = C"}, "rename", "rename the same folder"),
        ({"opt_rename": "A/ = B"}, "rename", "empty path component"),
        ({"opt_under_inbox": "1"}, "under", "Enter the folder to put everything in"),
        ({"opt_under": "Imported//x"}, "under", "empty path component"),
    ],
)
def test_each_error_is_tied_to_its_field(fields: dict[str, str], field: str, words: str) -> None:
    form = OptionsForm.from_form(fields)
    assert form.to_folders() == {}
    assert set(form.errors) == {field}, form.errors
    assert words in form.errors[field]
    assert "--" not in form.errors[field] and "folders." not in form.errors[field]


def test_options_become_the_apis_folders_keys() -> None:
    form = OptionsForm.from_form(
        {
            "opt_since": "2023-01-01",
            "opt_before": "2025-01-01",
            "opt_smaller_mb": "2,5",
            "opt_rename": " Work = Projects \n\n Old/Stuff=Archive ",
            "opt_under": "Imported",
            "opt_under_inbox": "1",
        }
    )
    folders = form.to_folders()
    assert form.errors == {}
    assert folders == {
        "since": "2023-01-01",
        "before": "2025-01-01",
        "smaller": 2_621_440,
        "rename": ["Work=Projects", "Old/Stuff=Archive"],
        "under": "Imported",
        "under_inbox": True,
    }
    assert describe_options(folders) == [
        "only mail received on or after 2023-01-01",
        "only mail received before 2025-01-01",
        "only messages smaller than 2,621,440 bytes",
        "Work renamed to Projects",
        "Old/Stuff renamed to Archive",
        "everything put in Imported (the inbox too)",
    ]


@pytest.fixture
def mailbox(dovecot: DovecotServer) -> DovecotServer:
    dovecot.deliver_many("src", "INBOX", [make_message(i) for i in range(3)])
    dovecot.deliver_many("src", "Work", [make_message(i) for i in range(3, 5)])
    return dovecot


@pytest.fixture
def svc(tmp_path: Path, mailbox: DovecotServer) -> Iterator[Service]:
    service = Service(
        Settings.load(tmp_path / "svc", ca_file=str(mailbox.ca_file), maintenance_interval=3600.0)
    )
    try:
        yield service
    finally:
        service.close()


def folder_step(b: Browser, server: DovecotServer) -> str:
    """Through the source and destination steps to the folder step's page."""
    accounts: dict[str, Any] = {}
    for role, user, pw in (("source", "src", "srcpass"), ("dest", "dst", "dstpass")):
        accounts.update(
            {
                f"{role}_preset": "other",
                f"{role}_host": "127.0.0.1",
                f"{role}_port": str(server.port),
                f"{role}_security": "starttls",
                f"{role}_username": user,
                f"{role}_password": pw,
            }
        )
    page = b.get("/transfers/new").text
    for action in ("check_source", "check_dest"):
        fields = with_values(form_fields(page, "/transfers/new"), **accounts, action=action)
        r = b.post("/transfers/new", fields)
        assert r.status_code == 200, html.unescape(r.text)[-2000:]
        page = r.text
    assert 'name="opt_since"' in page
    return page


def test_the_folder_step_orders_with_filters_renames_and_under(
    svc: Service, mailbox: DovecotServer
) -> None:
    b = Browser(TestClient(create_app(svc)))
    b.signup("ada@example.org")
    page = folder_step(b, mailbox)

    # Wrong first: the page says what, by field, in words; nothing is ordered.
    bad = {
        "opt_since": "2024-06-01",
        "opt_before": "2024-01-01",
        "opt_rename": "Work",
        "action": "start",
    }
    r = b.post("/transfers/new", with_values(form_fields(page, "/transfers/new"), **bad))
    text = html.unescape(r.text)
    assert r.status_code == 400
    assert "Please correct the options below." in text
    assert 'data-option-error="before"' in r.text and 'data-option-error="rename"' in r.text
    assert "--since" not in text and "folders." not in text
    assert 'value="2024-06-01"' in r.text  # what was typed stays
    uid = svc.authenticate("ada@example.org", "correct horse battery")
    assert uid is not None and svc.list_transfers(uid) == []

    preview = {
        "opt_since": "",
        "opt_before": "",
        "opt_rename": "Work = Projects",
        "opt_under": "Imported",
        "opt_smaller_mb": "10",
        "action": "preview",
    }
    r = b.post("/transfers/new", with_values(form_fields(r.text, "/transfers/new"), **preview))
    assert r.status_code == 200, html.unescape(r.text)[-2000:]
    assert "→ Imported/Projects" in html.unescape(r.text)  # the names after the options
    assert svc.list_transfers(uid) == []  # a preview orders nothing

    good = {
        "opt_since": "2020-01-01",
        "opt_before": "",
        "opt_smaller_mb": "10",
        "opt_rename": "Work = Projects",
        "opt_under": "Imported",
        "action": "start",
    }
    r = b.post("/transfers/new", with_values(form_fields(r.text, "/transfers/new"), **good))
    assert r.status_code == 303, html.unescape(r.text)[-2000:]
    (view,) = svc.list_transfers(uid)
    assert view.folders == {
        "include": [],
        "exclude": [],
        "since": "2020-01-01",
        "smaller": 10 * 1024 * 1024,
        "rename": ["Work=Projects"],
        "under": "Imported",
    }
    job = html.unescape(b.get(r.headers["location"]).text)
    assert "only mail received on or after 2020-01-01" in job
    assert "Work renamed to Projects; everything put in Imported" in job
