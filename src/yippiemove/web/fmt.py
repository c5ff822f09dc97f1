"""Numbers for people: sizes, rates, durations, times (Jinja filters; job.js mirrors them)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from .presets import DEFAULT_PORTS


def size(n: Any) -> str:
    try:
        value = float(n)
    except (TypeError, ValueError):
        return "–"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}" if abs(value) < 100 else f"{value:.0f} {unit}"
        value /= 1000
    return f"{value:.0f} TB"  # pragma: no cover - loop always returns


def rate(n: Any) -> str:
    if n is None:
        return "–"
    return size(n) + "/s"


def duration(seconds: Any) -> str:
    try:
        s = round(float(seconds))
    except (TypeError, ValueError):
        return "–"
    if s < 0:
        return "–"
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def eta_range(span: Any) -> str:
    """A time left as a range in one unit ("about 3–4 min"), from ``[low, high]``
    seconds (the job's ``eta_range``); "–" without one.  The same in static/job.js."""
    try:
        lo, hi = (float(x) for x in span)
    except (TypeError, ValueError):
        return "–"
    if lo < 0 or hi < lo:
        return "–"
    for unit, secs in (("d", 86400), ("h", 3600), ("min", 60)):
        if hi >= secs * (1.5 if unit != "min" else 1):
            a, b = max(1, math.floor(lo / secs)), max(1, math.ceil(hi / secs))
            return f"about {a} {unit}" if a == b else f"about {a}–{b} {unit}"
    if hi < 10:
        return "a few seconds"
    a, b = math.floor(lo / 10) * 10, math.ceil(hi / 10) * 10
    return f"about {max(a, 10)} s" if max(a, 10) == b else f"about {max(a, 10)}–{b} s"


def isotime(ts: Any) -> str:
    """UTC ISO 8601 for ``<time datetime=...>`` (app.js shows it in local time)."""
    if ts is None:
        return ""
    try:
        return dt.datetime.fromtimestamp(float(ts), dt.UTC).isoformat(timespec="seconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def humantime(ts: Any) -> str:
    """A readable UTC time, the fallback text before app.js localises it."""
    if ts is None:
        return "–"
    try:
        t = dt.datetime.fromtimestamp(float(ts), dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return "–"
    return t.strftime("%Y-%m-%d %H:%M UTC")


def percent(done: Any, total: Any) -> int:
    try:
        d, t = float(done), float(total)
    except (TypeError, ValueError):
        return 0
    if t <= 0:
        return 0
    return max(0, min(100, int(d * 100 // t)))


def where(acc: Any) -> str:
    """An account's server: ``host``, with the port when it is not the usual one."""
    if not isinstance(acc, dict):
        return "–"
    host = str(acc.get("host", ""))
    port = acc.get("port")
    usual = DEFAULT_PORTS.get(str(acc.get("security")))
    return host if port in (None, usual) else f"{host}:{port}"


def account(acc: Any) -> str:
    """``user @ host`` (with the port when it is not the usual one)."""
    if not isinstance(acc, dict):
        return "–"
    return f"{acc.get('username', '')} @ {where(acc)}"


def folder_key(name: Any) -> tuple[bool, str]:
    """INBOX first, then by name (so subfolders follow their parents)."""
    text = str(name)
    return (text.upper() != "INBOX" and not text.upper().startswith("INBOX/"), text.casefold())


def by_folder(items: Any, attribute: str | None = None) -> list[Any]:
    """Sort folder dicts (by ``attribute``) or ``dict.items()`` pairs (by key)."""
    seq = list(items or [])
    if attribute is None:
        return sorted(seq, key=lambda kv: folder_key(kv[0]))
    return sorted(seq, key=lambda d: folder_key(d.get(attribute, "")))


def money(amount: int | None, currency: str = "usd") -> str:
    """Minor units as the customer reads them ("$12.50"): service/receipts.py."""
    from yippiemove.service.receipts import money as _money

    return _money(int(amount or 0), currency)


FILTERS = {
    "money": money,
    "size": size,
    "rate": rate,
    "duration": duration,
    "eta_range": eta_range,
    "isotime": isotime,
    "humantime": humantime,
    "account": account,
    "where": where,
    "by_folder": by_folder,
}
