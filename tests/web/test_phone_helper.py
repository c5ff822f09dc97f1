"""tests/web/phone.py catches what hides information at 390 px, and passes what does not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.web.phone import PHONE, assert_fits_phone, problems

pytestmark = pytest.mark.timeout(120)

HEAD = "<meta name=viewport content='width=device-width, initial-scale=1'>"


@pytest.fixture(scope="module")
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=PHONE)  # type: ignore[arg-type]
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("<div style='width:600px'>wide</div>", "wider than the window"),
        (
            "<div style='overflow-x:auto'><table><tr><td style='white-space:nowrap'>"
            + "Archive/2019/Q1/A very long destination folder name indeed" * 2
            + "</td><td>12,345</td></tr></table></div>",
            "sideways-scrolling box",
        ),
        (
            "<span style='display:block;width:80px;overflow:hidden;text-overflow:ellipsis;"
            "white-space:nowrap'>1,234,567 messages</span>",
            "ellipsis",
        ),
        (
            "<div style='width:100px;overflow:hidden'><span style='white-space:nowrap'>"
            "12.3 MB of 456.7 MB</span></div>",
            "clipped",
        ),
        (
            "<div style='position:relative'><span>ada@example.org 1,234 messages</span>"
            "<b style='position:absolute;left:20px;top:0'>Finished</b></div>",
            "text drawn over",
        ),
        (  # a flex row makes columns of a sentence's pieces: its words break mid-word
            "<p style='display:flex;width:300px;overflow-wrap:anywhere'>Waiting for "
            "confirmation: <strong>ada.lovelace.countess@analytical-engines.example</strong>"
            " (open the link we sent there).</p>",
            "broken over",
        ),
    ],
)
def test_hidden_information_is_caught(page: Page, body: str, expected: str) -> None:
    page.set_content(HEAD + body)
    found = problems(page)
    assert any(expected in p for p in found), found
    with pytest.raises(AssertionError):
        assert_fits_phone(page, "phone-helper-bad")


def test_what_fits_passes(page: Page) -> None:
    page.set_content(
        HEAD
        + "<p>"
        + "A long paragraph that wraps. " * 30
        + "</p><span style='position:absolute;width:1px;height:1px;overflow:hidden'>"
        "screen-reader text that is longer than one pixel</span>"
        "<input value='" + "x" * 200 + "'><div hidden style='width:900px'>hidden</div>"
        "<div style='max-height:40px;overflow-y:auto'>" + "tall<br>" * 20 + "</div>"
        "<p>text under a box that scrolls up and down</p>"
        "<p style='width:200px;overflow-wrap:anywhere'>Newsletters/"
        "averyveryverylongfoldernamewithoutanyspacesatalltobreakon2024 and "
        "ada.lovelace.countess@analyticalenginesinternational.example</p>"
    )
    assert problems(page) == []
    assert assert_fits_phone(page, "phone-helper-ok").exists()
