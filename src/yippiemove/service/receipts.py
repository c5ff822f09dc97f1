"""Receipts and the ledger's CSV (issue 20, docs/billing.md): pure rendering, no I/O
beyond reading a font file, no database, no web framework.

- :func:`money` shows an amount in minor units (cents) with its currency: ``$12.50``,
  ``€9.00``, ``£1,234.00``, ``¥1,200``, ``-$5.00``; a currency without a symbol here is
  shown by its code first: ``CHF 12.50``, ``-CHF 5.00``. Integer arithmetic only.
- The minor unit follows Stripe (the amounts come from and go to it): the zero-decimal
  currencies (``jpy``, ``krw``...) have none, the three-decimal ones (``kwd``...) have
  three, every other currency two (also ``isk``, ``huf``, ``twd``, which Stripe takes
  with two decimals).
- :func:`receipt_pdf` draws a receipt on one A4 page with fpdf2. The font is DejaVu Sans
  when Debian's fonts-dejavu-core is installed (embedded, a subset), else the core font
  Helvetica (cp1252). A character the font has no glyph for becomes its base letter
  (``Ő`` -> ``O``) or ``?``; control characters become spaces: never an error. The same
  receipt gives the same bytes (the PDF's dates are the payment's).
- :func:`receipt_context` is what templates/payment_receipt.html shows.
- :func:`ledger_csv`: the entries as CSV, amounts as plain decimals (``-10.00``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fpdf import FPDF
from fpdf.enums import Align, XPos, YPos

from ..transfer.receipt import csv_cell

__all__ = [
    "LEDGER_COLUMNS",
    "LedgerRow",
    "Receipt",
    "ReceiptLine",
    "decimal_amount",
    "ledger_csv",
    "minor_digits",
    "money",
    "receipt_context",
    "receipt_pdf",
]

#: Currencies without a minor unit (Stripe's list): an amount is in whole units.
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
#: Currencies with three decimals in Stripe's amounts.
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())
#: The symbols shown before an amount; any other currency shows its code ("CHF 12.50").
SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥"}

#: The DejaVu fonts of Debian's fonts-dejavu-core; Helvetica when they are not there.
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT_REGULAR = "DejaVuSans.ttf"
FONT_BOLD = "DejaVuSans-Bold.ttf"
#: The core font's encoding (latin-1 plus the euro sign and typographic quotes).
CORE_ENCODING = "cp1252"

STATUS_LABELS = {"paid": "Paid", "refunded": "Refunded", "disputed": "Disputed"}
LEDGER_COLUMNS = ("date", "kind", "amount", "balance", "note", "transfer", "payment")


@dataclass(frozen=True)
class ReceiptLine:
    description: str
    amount: int  # minor units, may be negative (credits used)


@dataclass(frozen=True)
class Receipt:
    number: str  # e.g. "YM-2026-000042", given by the caller
    payment_id: str
    paid_at: float  # epoch seconds
    timezone: str  # IANA name the dates are shown in; an unknown one: UTC
    customer: str  # the customer's e-mail (or company name)
    seller: str  # the operator's name
    currency: str
    lines: tuple[ReceiptLine, ...]
    total: int  # what was charged to the card
    card: str | None  # e.g. "visa 4242"
    reference: str  # Stripe's PaymentIntent id
    status: str  # "paid" | "refunded" | "disputed"


@dataclass(frozen=True)
class LedgerRow:
    id: int
    created_at: float
    kind: str
    amount: int
    balance_after: int
    note: str | None
    order_id: str | None
    job_id: str | None
    payment_id: str | None


# -- money ---------------------------------------------------------------------------


def minor_digits(currency: str) -> int:
    """Decimals of the currency's minor unit in Stripe's amounts: 0, 2 or 3."""
    c = currency.strip().lower()
    if c in ZERO_DECIMAL:
        return 0
    return 3 if c in THREE_DECIMAL else 2


def _check(amount: int) -> None:
    # bool is an int, and a float is exactly what must never be money here.
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise TypeError(f"an amount is an integer of minor units, not {amount!r}")


def _digits(amount: int, currency: str, group: bool) -> str:
    """``abs(amount)`` in major units, without a sign: ``1,234.50`` (grouped) or
    ``1234.50``."""
    n = minor_digits(currency)
    major, minor = divmod(abs(amount), 10**n)
    whole = f"{major:,}" if group else str(major)
    return f"{whole}.{minor:0{n}d}" if n else whole


def decimal_amount(amount: int, currency: str) -> str:
    """A plain decimal for machines: ``12.50``, ``-10.00``, ``1200`` (yen): no symbol, no
    grouping."""
    _check(amount)
    return ("-" if amount < 0 else "") + _digits(amount, currency, group=False)


def _money(amount: int, currency: str, can_show: Callable[[str], bool]) -> str:
    _check(amount)
    sign = "-" if amount < 0 else ""
    figure = _digits(amount, currency, group=True)
    symbol = SYMBOLS.get(currency.strip().lower())
    if symbol is not None and can_show(symbol):
        return f"{sign}{symbol}{figure}"
    return f"{sign}{currency.strip().upper()} {figure}"


def money(amount: int, currency: str) -> str:
    """``$12.50``, ``€9.00``, ``£1,234.00``, ``¥1,200``, ``-$5.00``; a currency without a
    symbol here: its code first, ``CHF 12.50``."""
    return _money(amount, currency, lambda _s: True)


# -- dates ---------------------------------------------------------------------------


def _zone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        return dt.UTC


def _zone_name(name: str) -> str:
    return name if _zone(name) is not dt.UTC else "UTC"


def _local(ts: float, zone: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, _zone(zone))


def _shown_date(ts: float, zone: str) -> str:
    """``2026-12-07 15:03 CET``: in the receipt's time zone, its abbreviation after."""
    t = _local(ts, zone)
    return f"{t:%Y-%m-%d %H:%M} {t.tzname() or 'UTC'}"


# -- the receipt, as HTML's data -----------------------------------------------------


def receipt_context(r: Receipt) -> dict[str, Any]:
    """What templates/payment_receipt.html shows, as ``receipt``: every amount formatted
    (``*_minor`` keeps the integer), the date in the receipt's time zone."""
    zone = _zone_name(r.timezone)
    return {
        "number": r.number,
        "payment_id": r.payment_id,
        "date": _shown_date(r.paid_at, zone),
        "date_iso": _local(r.paid_at, zone).isoformat(timespec="seconds"),
        "timezone": zone,
        "customer": r.customer,
        "seller": r.seller,
        "currency": r.currency.strip().upper(),
        "lines": [
            {
                "description": line.description,
                "amount": money(line.amount, r.currency),
                "amount_minor": line.amount,
            }
            for line in r.lines
        ],
        "total": money(r.total, r.currency),
        "total_minor": r.total,
        "card": r.card,
        "reference": r.reference,
        "status": r.status,
        "status_label": STATUS_LABELS.get(r.status, r.status.capitalize()),
        "paid": r.status == "paid",
    }


# -- the receipt, as PDF -------------------------------------------------------------


class _Pdf(FPDF):
    """One receipt's document: its fonts, and its text made safe for them."""

    def __init__(self) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        regular, bold = FONT_DIR / FONT_REGULAR, FONT_DIR / FONT_BOLD
        self.glyphs: frozenset[int] | None = None
        self.family = "helvetica"
        if regular.is_file():
            try:
                self.add_font("dejavu", "", str(regular))
                self.add_font("dejavu", "B", str(bold if bold.is_file() else regular))
            except Exception:  # a broken font file: the core font still draws
                self.fonts.pop("dejavu", None)
                self.fonts.pop("dejavuB", None)
            else:
                self.family = "dejavu"
                # what both faces can draw (the bold one has a few glyphs fewer)
                self.glyphs = frozenset(self.fonts["dejavu"].cmap).intersection(
                    self.fonts["dejavuB"].cmap
                )
        if self.family == "helvetica":
            self.core_fonts_encoding = CORE_ENCODING

    def can_show(self, ch: str) -> bool:
        if self.glyphs is not None:
            return all(ord(c) in self.glyphs for c in ch)
        try:
            ch.encode(CORE_ENCODING)
        except UnicodeEncodeError:
            return False
        return True

    def safe(self, text: str) -> str:
        """``text`` with only characters the font can draw; never raises."""
        out: list[str] = []
        for ch in str(text):
            cat = unicodedata.category(ch)
            if cat in ("Cc", "Zl", "Zp"):
                out.append(" ")
            elif cat in ("Cf", "Cs", "Co", "Cn"):  # invisible, broken or unassigned
                out.append("" if cat == "Cf" else "?")
            elif self.can_show(ch):
                out.append(ch)
            else:
                base = "".join(
                    c
                    for c in unicodedata.normalize("NFKD", ch)
                    if not unicodedata.combining(c) and self.can_show(c)
                )
                out.append(base or "?")
        return "".join(out)

    def font(self, size: float, bold: bool = False) -> None:
        self.set_font(self.family, "B" if bold else "", size)


def _pdf_money(pdf: _Pdf, amount: int, currency: str) -> str:
    return pdf.safe(_money(amount, currency, pdf.can_show))


def receipt_pdf(r: Receipt) -> bytes:
    """The receipt on one A4 page: seller, number, date, customer, the lines with their
    amounts right-aligned, the total, the card, the reference, and the status unless
    paid. The same receipt gives the same bytes."""
    pdf = _Pdf()
    created = dt.datetime.fromtimestamp(r.paid_at, dt.UTC)
    pdf.set_creation_date(created)
    pdf.set_producer("yippiemove")
    pdf.set_title(pdf.safe(f"Receipt {r.number}"))
    pdf.set_author(pdf.safe(r.seller))
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(True, margin=20)
    pdf.add_page()
    width = pdf.epw
    nl: dict[str, Any] = {"new_x": XPos.LMARGIN, "new_y": YPos.NEXT}

    pdf.font(16, bold=True)
    pdf.multi_cell(width, 8, pdf.safe(r.seller), align=Align.L, **nl)
    pdf.ln(2)
    pdf.font(22, bold=True)
    pdf.cell(width, 11, "Receipt", **nl)
    if r.status != "paid":
        pdf.set_text_color(170, 20, 20)
        pdf.font(14, bold=True)
        label = STATUS_LABELS.get(r.status, r.status.capitalize())
        pdf.multi_cell(width, 8, pdf.safe(label.upper()), align=Align.L, **nl)
        pdf.set_text_color(0, 0, 0)
    pdf.ln(3)

    key_w = 35.0
    zone = _zone_name(r.timezone)
    facts = [
        ("Receipt number", r.number),
        ("Date", _shown_date(r.paid_at, zone)),
        ("Customer", r.customer),
    ]
    for key, value in facts:
        pdf.font(10)
        pdf.set_text_color(90, 90, 90)
        pdf.cell(key_w, 6, key)
        pdf.set_text_color(0, 0, 0)
        pdf.multi_cell(width - key_w, 6, pdf.safe(value), align=Align.L, **nl)
    pdf.ln(6)

    amount_w = 45.0
    pdf.font(10, bold=True)
    pdf.cell(width - amount_w, 7, "Description", border="B")
    pdf.cell(amount_w, 7, "Amount", border="B", align=Align.R, **nl)
    pdf.font(10)
    for line in r.lines:
        pdf.ln(1.5)
        top, page = pdf.get_y(), pdf.page
        pdf.multi_cell(width - amount_w - 4, 6, pdf.safe(line.description), align=Align.L, **nl)
        bottom = pdf.get_y()
        if pdf.page != page:  # the description went on the next page: its amount too
            top = pdf.t_margin
        pdf.set_xy(pdf.l_margin + width - amount_w, top)
        pdf.cell(amount_w, 6, _pdf_money(pdf, line.amount, r.currency), align=Align.R)
        pdf.set_xy(pdf.l_margin, max(bottom, top + 6) + 1.5)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + width, pdf.get_y())
    pdf.font(11, bold=True)
    pdf.cell(width - amount_w, 9, "Total charged")
    pdf.cell(amount_w, 9, _pdf_money(pdf, r.total, r.currency), align=Align.R, **nl)
    pdf.ln(6)

    pdf.font(10)
    tail = []
    if r.card:
        tail.append(("Card", r.card))
    tail += [("Reference", r.reference), ("Payment", r.payment_id)]
    for key, value in tail:
        pdf.set_text_color(90, 90, 90)
        pdf.cell(key_w, 6, key)
        pdf.set_text_color(0, 0, 0)
        pdf.multi_cell(width - key_w, 6, pdf.safe(value), align=Align.L, **nl)
    return bytes(pdf.output())


# -- the ledger as CSV ---------------------------------------------------------------


def ledger_csv(rows: Iterable[LedgerRow], currency: str, timezone: str = "UTC") -> str:
    """The entries as CSV, a header first (:data:`LEDGER_COLUMNS`), one line each.

    ``date``: ISO 8601 in ``timezone`` with its offset (``2026-12-07T15:03:00+01:00``);
    ``amount``, ``balance``: plain decimals (``-10.00``, ``1200`` for yen), numbers a
    spreadsheet reads as numbers; ``transfer``: the entry's job, else its order. A text
    cell a spreadsheet would run as a formula gets a leading apostrophe (the guard of the
    transfer CSVs); the amounts are written as they are, so a negative one stays a number.
    """
    zone = _zone_name(timezone)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(LEDGER_COLUMNS)
    for row in rows:
        w.writerow(
            [
                csv_cell(_local(row.created_at, zone).isoformat(timespec="seconds")),
                csv_cell(row.kind),
                decimal_amount(row.amount, currency),
                decimal_amount(row.balance_after, currency),
                csv_cell(row.note),
                csv_cell(row.job_id or row.order_id),
                csv_cell(row.payment_id),
            ]
        )
    return buf.getvalue()
