"""Prices and quotes (issue 20; docs/billing.md): what a transfer costs, and why.

Pure functions of the operator's prices and of what the folder step counted; no I/O.
Amounts are integers in the installation's minor unit (cents), never floats.

Prices are written as the operator types them in settings (``YIPPIEMOVE_PRICE_BANDS``...):

- bands: ``"1GB:900,10GB:1500,*:2500"``, the price of a mailbox up to each size, the
  last ``*`` for any size (without it a bigger mailbox cannot be quoted: say so);
- bundles: ``"15000:12000,60000:45000"``, so much credit (minor units) for that price:
  credit is money, spent on any band, so a bundle is a discount on whatever is moved.

A quote lists its lines (the band, the allowance, the credits used) and the rest to
pay; an order names its quote so the price it showed is the price it keeps.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "Band",
    "Bundle",
    "PriceError",
    "Prices",
    "Quote",
    "parse_bands",
    "parse_bundles",
    "parse_size",
    "quote",
]

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?B)?\s*", re.IGNORECASE)
#: Larger figures are typing mistakes, not prices (a mailbox for $10 million).
MAX_AMOUNT = 10**9


class PriceError(ValueError):
    """A price setting that cannot be used; the message names the setting and the text."""


@dataclass(frozen=True)
class Band:
    up_to: int | None  # bytes; None: any size
    amount: int


@dataclass(frozen=True)
class Bundle:
    credit: int  # what it adds to the balance (minor units)
    amount: int  # what it costs

    @property
    def discount_percent(self) -> int:
        return (self.credit - self.amount) * 100 // self.credit


@dataclass(frozen=True)
class Prices:
    currency: str = "usd"
    #: Ordered by size; the first band a mailbox fits sets its price.
    bands: tuple[Band, ...] = (Band(None, 1000),)
    #: Mailboxes up to this many bytes are free (0: none).
    free_bytes: int = 0
    #: A re-run or top-up of a transfer paid within this many days is free.
    free_rerun_days: int = 30
    bundles: tuple[Bundle, ...] = ()


@dataclass(frozen=True)
class Quote:
    currency: str
    price: int  # of the transfer, before credits
    credits_used: int  # from the balance
    to_pay: int  # by card
    lines: tuple[tuple[str, int], ...] = field(default=())


def parse_size(text: str, what: str = "size") -> int:
    """``"1GB"``, ``"500 MB"``, ``"1.5GB"`` -> bytes (powers of 10, as mail providers count)."""
    m = _SIZE.fullmatch(text)
    if m is None:
        raise PriceError(f"{what}: {text!r} is not a size (e.g. 500MB, 1GB, 2.5GB)")
    number, unit = m.group(1), (m.group(2) or "").upper()
    value = float(number) * _UNITS[unit]
    if value <= 0:
        raise PriceError(f"{what}: {text!r} must be more than 0")
    return int(value)


def _amount(text: str, what: str) -> int:
    text = text.strip()
    if not text.isdigit():
        raise PriceError(f"{what}: {text!r} is not an amount in minor units (e.g. 1500)")
    value = int(text)
    if value > MAX_AMOUNT:
        raise PriceError(f"{what}: {text!r} is more than {MAX_AMOUNT} minor units")
    return value


def parse_bands(text: str) -> tuple[Band, ...]:
    """``"1GB:900,10GB:1500,*:2500"`` -> bands ordered by size, each bigger than the last."""
    bands: list[Band] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        size, sep, amount = part.partition(":")
        if not sep:
            raise PriceError(f"price bands: {part!r} is not SIZE:AMOUNT (e.g. 1GB:900)")
        if bands and bands[-1].up_to is None:
            raise PriceError(f"price bands: {part!r} comes after the band for any size ('*')")
        up_to = None if size.strip() == "*" else parse_size(size, "price bands")
        if up_to is not None and bands and up_to <= (bands[-1].up_to or 0):
            raise PriceError(f"price bands: {part!r} is not bigger than the band before it")
        bands.append(Band(up_to, _amount(amount, "price bands")))
    if not bands:
        raise PriceError("price bands: none given (e.g. '1GB:900,*:1500')")
    return tuple(bands)


def parse_bundles(text: str) -> tuple[Bundle, ...]:
    """``"15000:12000,60000:45000"`` -> bundles: CREDIT:PRICE, the price at most the credit."""
    out: list[Bundle] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        credit, sep, amount = part.partition(":")
        if not sep:
            raise PriceError(f"bundles: {part!r} is not CREDIT:PRICE (e.g. 15000:12000)")
        b = Bundle(_amount(credit, "bundles"), _amount(amount, "bundles"))
        if b.credit == 0 or b.amount == 0 or b.amount > b.credit:
            raise PriceError(f"bundles: {part!r} must give some credit for a price not above it")
        out.append(b)
    return tuple(sorted(out, key=lambda b: b.credit))


def _fmt_size(n: int) -> str:
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def quote(
    prices: Prices,
    *,
    mailbox_bytes: int,
    messages: int,
    balance: int = 0,
    paid_within_days: float | None = None,
) -> Quote:
    """What moving one mailbox of ``mailbox_bytes`` / ``messages`` costs, and why.

    ``balance``: the customer's credit (minor units), used first. ``paid_within_days``:
    days since this same transfer (source and destination) was last paid for, if ever:
    a re-run or top-up within ``free_rerun_days`` is free.
    """
    if mailbox_bytes < 0 or messages < 0:
        raise ValueError(
            f"a mailbox has no negative size: {mailbox_bytes} bytes, {messages} messages"
        )
    if balance < 0:
        raise ValueError(f"a balance is never negative here: {balance}")
    cur = prices.currency
    what = f"{messages:,} messages, {_fmt_size(mailbox_bytes)}"
    if paid_within_days is not None and paid_within_days <= prices.free_rerun_days:
        line = f"re-run of a transfer paid {paid_within_days:.0f} days ago: free"
        return Quote(cur, 0, 0, 0, ((line, 0),))
    if mailbox_bytes <= prices.free_bytes:
        line = f"{what}: free up to {_fmt_size(prices.free_bytes)}"
        return Quote(cur, 0, 0, 0, ((line, 0),))
    band = _band(prices.bands, mailbox_bytes)
    limit = "any size" if band.up_to is None else f"up to {_fmt_size(band.up_to)}"
    lines: list[tuple[str, int]] = [(f"{what}: mailbox {limit}", band.amount)]
    used = min(balance, band.amount)
    if used:
        lines.append(("paid from your credit", -used))
    return Quote(cur, band.amount, used, band.amount - used, tuple(lines))


def _band(bands: Sequence[Band], size: int) -> Band:
    for b in bands:
        if b.up_to is None or size <= b.up_to:
            return b
    raise PriceError(
        f"no price for a mailbox of {_fmt_size(size)}: the largest band is up to "
        f"{_fmt_size(bands[-1].up_to or 0)} (add a '*' band for any size)"
    )
