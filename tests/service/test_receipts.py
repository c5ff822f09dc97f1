"""Receipts and the ledger's CSV (service/receipts.py): money as text, the PDF read back
with pypdf, the HTML template rendered with Jinja2 alone, the CSV read back with csv."""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from pathlib import Path

import jinja2
import pypdf
import pytest

from yippiemove.service import receipts
from yippiemove.service.receipts import (
    LedgerRow,
    Receipt,
    ReceiptLine,
    decimal_amount,
    ledger_csv,
    money,
    receipt_context,
    receipt_pdf,
)

#: 2026-12-07 14:03:00 UTC: 15:03 in Berlin (CET, +01:00).
PAID_AT = 1796652180.0
TEMPLATES = Path(receipts.__file__).resolve().parent.parent / "web" / "templates"
DEJAVU = receipts.FONT_DIR / receipts.FONT_REGULAR

RECEIPT = Receipt(
    number="YM-2026-000042",
    payment_id="pay_7f3a",
    paid_at=PAID_AT,
    timezone="Europe/Berlin",
    customer="ada@example.com",
    seller="yippiemove",
    currency="usd",
    lines=(
        ReceiptLine("1,234 messages, 3.2 GB: mailbox up to 5 GB", 1500),
        ReceiptLine("paid from your credit", -300),
    ),
    total=1200,
    card="visa 4242",
    reference="pi_3QxYzAbCdEf",
    status="paid",
)


def pdf_text(data: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages)


# -- money ---------------------------------------------------------------------------


def test_money_in_the_usual_currencies():
    assert money(1250, "usd") == "$12.50"
    assert money(900, "eur") == "€9.00"
    assert money(123400, "gbp") == "£1,234.00"
    assert money(5, "usd") == "$0.05"
    assert money(0, "usd") == "$0.00"
    assert money(1250, "USD") == "$12.50"  # the code in any case


def test_money_of_zero_and_three_decimal_currencies():
    assert money(1200, "jpy") == "¥1,200"
    assert money(1200, "krw") == "KRW 1,200"
    assert money(-50, "jpy") == "-¥50"
    assert money(1250, "kwd") == "KWD 1.250"
    assert decimal_amount(1200, "jpy") == "1200"
    assert decimal_amount(1250, "kwd") == "1.250"


def test_money_negative_and_large():
    assert money(-500, "usd") == "-$5.00"
    assert money(-5, "usd") == "-$0.05"
    assert money(-123456, "eur") == "-€1,234.56"
    assert money(123456789012345678, "usd") == "$1,234,567,890,123,456.78"
    assert decimal_amount(-1000, "usd") == "-10.00"
    assert decimal_amount(123456789, "usd") == "1234567.89"


def test_money_of_a_currency_without_a_symbol_shows_its_code_first():
    assert money(1250, "chf") == "CHF 12.50"
    assert money(-500, "cad") == "-CAD 5.00"
    assert money(100000, "sek") == "SEK 1,000.00"


def test_money_is_never_a_float():
    for bad in (12.5, 12.0, True, "1250", None):
        with pytest.raises(TypeError):
            money(bad, "usd")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            decimal_amount(bad, "usd")  # type: ignore[arg-type]


# -- the PDF -------------------------------------------------------------------------


def test_pdf_is_one_a4_page_with_everything_in_its_text():
    data = receipt_pdf(RECEIPT)
    reader = pypdf.PdfReader(io.BytesIO(data))
    assert len(reader.pages) == 1
    box = reader.pages[0].mediabox
    assert (round(float(box.width)), round(float(box.height))) == (595, 842)  # A4 in pt
    text = pdf_text(data)
    for part in (
        "yippiemove",
        "Receipt",
        "YM-2026-000042",
        "2026-12-07 15:03 CET",
        "ada@example.com",
        "1,234 messages, 3.2 GB: mailbox up to 5 GB",
        "$15.00",
        "paid from your credit",
        "-$3.00",
        "$12.00",
        "visa 4242",
        "pi_3QxYzAbCdEf",
    ):
        assert part in text, part
    assert "Refunded" not in text and "REFUNDED" not in text


def test_pdf_amounts_stand_on_their_lines_right_aligned():
    """Each amount is on its line's baseline, at the right: a longer one starts further
    left (left-aligned, they would start at one x)."""
    spots: dict[str, tuple[float, float]] = {}

    def visit(text: str, cm: list[float], tm: list[float], font: object, size: float) -> None:
        if text.strip():
            spots[text.strip()] = (tm[4], tm[5])

    r = dataclasses.replace(
        RECEIPT,
        lines=(ReceiptLine("small", 5), ReceiptLine("big", 123456), ReceiptLine("credit", -1)),
        total=123460,
    )
    pypdf.PdfReader(io.BytesIO(receipt_pdf(r))).pages[0].extract_text(visitor_text=visit)
    small, big, credit, total = (
        spots["$0.05"],
        spots["$1,234.56"],
        spots["-$0.01"],
        spots["$1,234.60"],
    )
    assert abs(spots["small"][1] - small[1]) < 1 and abs(spots["big"][1] - big[1]) < 1
    assert small[0] > spots["small"][0] + 300  # far right
    assert big[0] < small[0] - 10  # right-aligned: the longer starts further left
    assert small[1] > big[1] > credit[1] > total[1]  # in order down the page


@pytest.mark.parametrize("status", ["refunded", "disputed"])
def test_pdf_says_when_the_payment_is_not_simply_paid(status: str):
    text = pdf_text(receipt_pdf(dataclasses.replace(RECEIPT, status=status)))
    assert status.upper() in text


def test_pdf_without_a_card_leaves_the_line_out():
    text = pdf_text(receipt_pdf(dataclasses.replace(RECEIPT, card=None)))
    assert "Card" not in text and "None" not in text
    assert "pi_3QxYzAbCdEf" in text


def test_the_same_receipt_gives_the_same_bytes_dated_by_its_payment():
    one, two = receipt_pdf(RECEIPT), receipt_pdf(RECEIPT)
    assert one == two
    meta = pypdf.PdfReader(io.BytesIO(one)).metadata
    assert meta is not None and meta.creation_date is not None
    assert meta.creation_date.timestamp() == PAID_AT
    assert receipt_pdf(dataclasses.replace(RECEIPT, paid_at=PAID_AT + 60)) != one


@pytest.mark.skipif(not DEJAVU.is_file(), reason="fonts-dejavu-core is not installed")
def test_pdf_with_dejavu_shows_names_beyond_latin_1():
    r = dataclasses.replace(
        RECEIPT,
        customer="Łukasz Żółć <жена@пример.рф> 山田",
        lines=(ReceiptLine("Überweisung für Ελλάδα\x00\u202e", 1200),),
        currency="eur",
    )
    data = receipt_pdf(r)
    assert b"DejaVu" in data  # the font is embedded
    text = pdf_text(data)
    assert "Łukasz Żółć <жена@пример.рф>" in text
    assert "山田" not in text and "??" in text  # no glyphs in DejaVu Sans: replaced
    assert "Überweisung für Ελλάδα" in text
    assert "€12.00" in text


def test_pdf_with_the_core_font_replaces_what_latin_1_cannot_show(monkeypatch, tmp_path):
    monkeypatch.setattr(receipts, "FONT_DIR", tmp_path)  # no DejaVu here
    r = dataclasses.replace(
        RECEIPT,
        customer="Zoë Őrs <жена@example.com>\t山田",
        lines=(ReceiptLine("crédit → used", -300), ReceiptLine("bundle", 1500)),
        currency="eur",
    )
    data = receipt_pdf(r)
    assert b"DejaVu" not in data and b"Helvetica" in data
    text = pdf_text(data)
    assert "Zoë Ors <????@example.com> ??" in text  # accents kept or folded, others "?"
    assert "crédit ? used" in text
    assert "-€3.00" in text and "€15.00" in text and "€12.00" in text  # cp1252 has €
    assert "YM-2026-000042" in text


def test_pdf_shows_a_symbol_the_font_lacks_as_the_code(monkeypatch, tmp_path):
    monkeypatch.setitem(receipts.SYMBOLS, "inr", "₹")
    r = dataclasses.replace(RECEIPT, currency="inr", lines=(ReceiptLine("x", 1250),))
    assert money(1250, "inr") == "₹12.50"
    monkeypatch.setattr(receipts, "FONT_DIR", tmp_path)  # Helvetica: no ₹ in cp1252
    text = pdf_text(receipt_pdf(r))
    assert "INR 12.50" in text and "?12.50" not in text
    text = pdf_text(receipt_pdf(dataclasses.replace(r, currency="jpy")))
    assert "¥1,250" in text  # ¥ is in cp1252


# -- dates and the HTML's context ----------------------------------------------------


def test_context_formats_money_and_the_date_in_the_receipts_zone():
    c = receipt_context(RECEIPT)
    assert c["number"] == "YM-2026-000042"
    assert c["date"] == "2026-12-07 15:03 CET"
    assert c["date_iso"] == "2026-12-07T15:03:00+01:00"
    assert c["timezone"] == "Europe/Berlin"
    assert [(x["description"], x["amount"], x["amount_minor"]) for x in c["lines"]] == [
        ("1,234 messages, 3.2 GB: mailbox up to 5 GB", "$15.00", 1500),
        ("paid from your credit", "-$3.00", -300),
    ]
    assert (c["total"], c["total_minor"], c["currency"]) == ("$12.00", 1200, "USD")
    assert c["paid"] is True and c["status_label"] == "Paid"
    summer = receipt_context(dataclasses.replace(RECEIPT, paid_at=1782898200.0))
    assert summer["date"] == "2026-07-01 11:30 CEST"


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "../../etc/passwd", "x" * 300])
def test_a_bad_time_zone_is_utc(zone: str):
    c = receipt_context(dataclasses.replace(RECEIPT, timezone=zone))
    assert c["date"] == "2026-12-07 14:03 UTC"
    assert c["timezone"] == "UTC"
    assert "2026-12-07 14:03 UTC" in pdf_text(
        receipt_pdf(dataclasses.replace(RECEIPT, timezone=zone))
    )


def test_context_of_a_refund():
    c = receipt_context(dataclasses.replace(RECEIPT, status="refunded"))
    assert c["paid"] is False and c["status_label"] == "Refunded"


# -- the HTML template ---------------------------------------------------------------


def render_page(r: Receipt) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # as Starlette's Jinja2Templates
        undefined=jinja2.StrictUndefined,  # every name the page needs is given below
    )
    return env.get_template("payment_receipt.html").render(
        receipt=receipt_context(r),
        pdf_url="/account/payments/pay_7f3a/receipt.pdf",
        static_version="1",
        user_email="ada@example.com",
        csrf="token",
        operator=False,
        billing_enabled=True,  # a receipt exists only with billing on
        flashes=[],
        job=None,
    )


def test_template_shows_the_lines_and_the_total_escaped():
    r = dataclasses.replace(
        RECEIPT,
        customer="<script>alert(1)</script>@example.com",
        lines=(ReceiptLine("mailbox <b>big</b> & more", 1500), ReceiptLine("credit", -300)),
    )
    html = render_page(r)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@example.com" in html
    assert "mailbox &lt;b&gt;big&lt;/b&gt; &amp; more" in html
    assert '<td class="num">$15.00</td>' in html
    assert '<td class="num">-$3.00</td>' in html
    assert "data-receipt-total>$12.00<" in html
    assert "YM-2026-000042" in html and "2026-12-07 15:03 CET" in html
    assert "pi_3QxYzAbCdEf" in html and "visa 4242" in html
    assert '<a class="btn" href="/account/payments/pay_7f3a/receipt.pdf" download' in html
    assert "Download PDF" in html
    assert "<title>Receipt YM-2026-000042 · yippiemove</title>" in html  # base.html's
    assert "data-receipt-status" not in html
    assert not re.search(r"<style|\sstyle=|<script>|\son[a-z]+=", html)  # the CSP's rules


def test_template_of_a_disputed_payment_says_so():
    html = render_page(dataclasses.replace(RECEIPT, status="disputed", card=None))
    assert "data-receipt-status>Disputed<" in html
    assert "data-card" not in html


# -- the ledger's CSV ----------------------------------------------------------------


def row(n: int, amount: int, balance: int, kind: str = "purchase", **refs: str | None) -> LedgerRow:
    fields = {"note": None, "order_id": None, "job_id": None, "payment_id": None}
    fields.update(refs)
    return LedgerRow(
        id=n, created_at=PAID_AT + n, kind=kind, amount=amount, balance_after=balance, **fields
    )


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_ledger_csv_has_a_header_and_one_line_per_entry():
    rows = [
        row(1, 5000, 5000, payment_id="pay_1", note="bundle of 50.00"),
        row(2, -1000, 4000, kind="spend", job_id="j-abc", order_id="o-1"),
        row(3, 1000, 5000, kind="refund", order_id="o-2"),
    ]
    got = read_csv(ledger_csv(rows, "usd"))
    assert got == [
        ["date", "kind", "amount", "balance", "note", "transfer", "payment"],
        ["2026-12-07T14:03:01+00:00", "purchase", "50.00", "50.00", "bundle of 50.00", "", "pay_1"],
        ["2026-12-07T14:03:02+00:00", "spend", "-10.00", "40.00", "", "j-abc", ""],
        ["2026-12-07T14:03:03+00:00", "refund", "10.00", "50.00", "", "o-2", ""],
    ]
    assert read_csv(ledger_csv([], "usd")) == [got[0]]
    assert read_csv(ledger_csv(iter(rows), "usd")) == got  # any iterable, once


def test_ledger_csv_guards_text_cells_but_not_the_amounts():
    rows = [
        row(1, -1000, 0, kind="adjust", note='=HYPERLINK("http://evil.example","x")'),
        row(2, 500, 500, kind="grant", note="+1 for you", payment_id="@pay"),
        row(3, 500, 1000, kind="grant", note="-minus", job_id="\tj"),
    ]
    got = read_csv(ledger_csv(rows, "usd"))
    assert got[1][4] == '\'=HYPERLINK("http://evil.example","x")'
    assert got[1][2] == "-10.00" and float(got[1][2]) == -10.0  # a number, unguarded
    assert got[2][4] == "'+1 for you" and got[2][6] == "'@pay"
    assert got[3][4] == "'-minus" and got[3][5] == "'\tj"
    assert [r[3] for r in got[1:]] == ["0.00", "5.00", "10.00"]


def test_ledger_csv_of_a_zero_decimal_currency():
    got = read_csv(ledger_csv([row(1, -1200, 3800, kind="spend")], "jpy"))
    assert got[1][2:4] == ["-1200", "3800"]


def test_ledger_csv_times_in_the_given_zone():
    rows = [row(0, 100, 100), dataclasses.replace(row(1, 100, 200), created_at=1782898200.0)]
    got = read_csv(ledger_csv(rows, "usd", "Europe/Berlin"))
    assert [r[0] for r in got[1:]] == ["2026-12-07T15:03:00+01:00", "2026-07-01T11:30:00+02:00"]
    got = read_csv(ledger_csv(rows, "usd", "America/New_York"))
    assert got[1][0] == "2026-12-07T09:03:00-05:00"
    got = read_csv(ledger_csv(rows, "usd", "Nowhere/Atall"))
    assert got[1][0] == "2026-12-07T14:03:00+00:00"
