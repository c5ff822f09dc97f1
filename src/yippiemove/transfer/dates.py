"""INTERNALDATE (RFC 3501 date-time) parsing, locale-independent."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    )
}
_DATE_TIME = re.compile(
    rb"\s*(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})\s*\Z"
)


def parse_internaldate(raw: bytes) -> datetime:
    """``b"17-Jul-1996 02:44:25 -0700"`` -> an aware datetime; ValueError if malformed."""
    m = _DATE_TIME.match(raw)
    if m is None:
        raise ValueError(f"not an IMAP date-time: {raw[:40]!r}")
    day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
    month = _MONTHS.get(mon.decode().upper())
    if month is None:
        raise ValueError(f"unknown month in IMAP date-time: {raw[:40]!r}")
    offset = timedelta(hours=int(zh), minutes=int(zm))
    if sign == b"-":
        offset = -offset
    return datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=timezone(offset))


def same_instant(a: bytes, b: bytes) -> bool:
    """Whether two INTERNALDATEs name the same moment (servers may change the zone)."""
    if a.strip() == b.strip():
        return True
    try:
        return parse_internaldate(a) == parse_internaldate(b)
    except ValueError:
        return False
