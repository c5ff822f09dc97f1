"""Issue 14: a customer over the limit of account checks in flight gets 429 and a clear
text, not a page that says the account is wrong."""

from __future__ import annotations

from typing import Any

from tests.web.conftest import Browser
from tests.web.fakes import FakeService, FolderInfo
from tests.web.htmlform import form_fields, with_values
from yippiemove.service.core import Busy


def test_too_many_checks_is_a_429_page(alice: Browser, fake: FakeService) -> None:
    seen: list[Any] = []

    async def busy(account: Any, **kw: Any) -> list[FolderInfo]:
        seen.append(kw.get("user_id"))
        raise Busy("you already have 2 account check(s) under way (at most 2 at a time)")

    fake.check_account = busy  # type: ignore[method-assign]
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
    assert r.status_code == 429
    assert "at most 2 at a time" in r.text
    assert seen and isinstance(seen[0], int)  # the check is counted against alice
