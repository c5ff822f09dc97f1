"""Turn the ticked folders of the "New transfer" page into ``{"include", "exclude"}``.

The mover matches a folder pattern by exact name, as a parent (``Archive`` also matches
``Archive/2019``) or as a shell glob (``transfer/engine.py: select_folders``).  The page
knows the folder names but not the server's hierarchy separator, so a plain name is used
only when every folder it could match (with ``/`` or ``.`` as the separator) is on the same
side of the selection; otherwise the name is written as a glob that matches that one folder
only (``[A]rchive`` matches ``Archive`` and nothing below it).

When fewer folders are left out than ticked, the selection is written as ``exclude`` (new
folders that appear on the source before the run are copied too); otherwise as ``include``.
"""

from __future__ import annotations

import bisect
import glob
import re
from collections.abc import Iterable, Sequence

_GLOB_CHARS = "*?["
_SEPARATORS = ("/", ".")


def _norm(name: str) -> str:
    return "INBOX" if name.upper() == "INBOX" else name


def could_match(pattern: str, name: str) -> bool:
    """Whether the mover may match ``name`` with the plain (glob-free) ``pattern``.

    Errs on the side of "yes": both common separators are tried, and the INBOX prefix rule
    of the mover is applied as loosely as the mover applies it.
    """
    if _norm(pattern) == _norm(name):
        return True
    for sep in _SEPARATORS:
        if name.startswith(pattern + sep):
            return True
        if pattern.upper().startswith("INBOX" + sep) and name.upper().startswith("INBOX"):
            if name[5:].startswith(pattern[5:]):
                return True
    return False


def exact_pattern(name: str) -> str:
    """A glob matching ``name`` only: not its subfolders, not other names."""
    escaped = glob.escape(name)
    if "[" in escaped:
        return escaped
    for i, ch in enumerate(escaped):
        if ch.isalnum():
            return f"{escaped[:i]}[{ch}]{escaped[i + 1 :]}"
    return escaped  # no letter or digit to wrap: extremely unlikely, plain is the best we have


_BRACKET = re.compile(r"\[(.)\]")


def display_pattern(pattern: str) -> str:
    """Undo ``exact_pattern`` for showing a selection to a person."""
    return _BRACKET.sub(r"\1", pattern)


def selection_to_folders(
    all_names: Sequence[str], selected: Iterable[str]
) -> dict[str, list[str]] | None:
    """``None`` when everything is selected, else an include or exclude list.

    Raises ``ValueError`` when nothing is selected or a selected name is not in the list.
    """
    names = list(dict.fromkeys(all_names))
    chosen = set(selected)
    unknown = chosen - set(names)
    if unknown:
        raise ValueError(f"unknown folder {sorted(unknown)[0]!r}")
    if not chosen:
        raise ValueError("no folder selected")
    left_out = [n for n in names if n not in chosen]
    if not left_out:
        return None

    def patterns(side: set[str]) -> list[str]:
        outside = _Outside([n for n in names if n not in side])
        out = []
        for name in names:
            if name not in side:
                continue
            safe = not any(c in name for c in _GLOB_CHARS) and not outside.could_match(name)
            out.append(name if safe else exact_pattern(name))
        return out

    if len(left_out) <= len(chosen):
        return {"include": [], "exclude": patterns(set(left_out))}
    return {"include": patterns(chosen), "exclude": []}


class _Outside:
    """The names on the other side of the selection, indexed so that "could the plain
    pattern ``name`` match one of them" (:func:`could_match`) is a few look-ups, not a
    try of every name (issue 14: 20,000 folders were 400 million tries)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.norms = {_norm(n) for n in names}
        self.sorted = sorted(names)
        self.inbox_tails = sorted(n[5:] for n in names if n.upper().startswith("INBOX"))

    @staticmethod
    def _any_prefixed(items: list[str], prefix: str) -> bool:
        i = bisect.bisect_left(items, prefix)
        return i < len(items) and items[i].startswith(prefix)

    def could_match(self, pattern: str) -> bool:
        """Whether ``could_match(pattern, other)`` holds for one of the names."""
        if _norm(pattern) in self.norms:
            return True
        for sep in _SEPARATORS:
            if self._any_prefixed(self.sorted, pattern + sep):
                return True
            if pattern.upper().startswith("INBOX" + sep) and self._any_prefixed(
                self.inbox_tails, pattern[5:]
            ):
                return True
        return False
