"""Servers that change what they store -- pure functions (docs/design.md, "A destination
that alters what it stores").

Some destinations store an appended message with other bytes than they were sent: line
endings CRLF -> LF, every 8-bit byte of the header replaced by one ASCII byte (``?``,
Cyrus's ``munge8bit`` uses ``X``), a blank line added to a message that is all header
and a leading mbox ``From `` line dropped (GNU Mailutils' imap4d).  The mail is there, but it is not byte-exact.  This
module recognises those changes and nothing else:

* :func:`learn` -- from one (sent, stored) pair, the :class:`Alteration` that turns the
  sent bytes into exactly the stored ones, or ``None`` when no recognised change does
  (the message then fails the verify, as any other difference does);
* :meth:`Alteration.apply` -- the server's change, mimicked on a copy of the source's
  bytes, so a stored message can be recognised by the SHA-256 of
  ``apply(source bytes)`` (the verify; "already there?" without the state file).

Nothing here is ever applied to what is sent: message bytes are appended exactly as
the source serves them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Alteration", "has_8bit_header", "header_end", "learn", "learn_any"]

_BLANK_LINE = re.compile(rb"\n\r?\n")
_EIGHT_BIT = re.compile(rb"[\x80-\xff]")


def header_end(body: bytes) -> int:
    """Where the header ends: the offset just after the last header line's LF (the
    blank line follows), 0 for a message that starts with a blank line, ``len(body)``
    for a message without a blank line (all header).  Works on CRLF and LF text alike,
    so it finds the same place before and after line endings were changed."""
    if body.startswith((b"\r\n", b"\n")):
        return 0
    m = _BLANK_LINE.search(body)
    return m.start() + 1 if m is not None else len(body)


def has_8bit_header(body: bytes) -> bool:
    """Whether the header has a byte >= 0x80 (cheap: the copy asks it of every message
    while the run does not know whether the destination keeps such bytes)."""
    end = body.find(b"\r\n\r\n", 0, 256 * 1024)
    return not body[: end if end >= 0 else header_end(body)].isascii()


_FROM_LINE = re.compile(rb"From [^\n]*\n")


@dataclass(frozen=True)
class Alteration:
    """What a server does to what it stores, applied in this order:

    ``drop_from_line`` -- a leading mbox envelope line (``From sender date``) dropped;
    ``header_8bit`` -- every byte >= 0x80 of the header stored as this one byte;
    ``blank_line`` -- a message without a blank line (all header) stored with a CRLF
    added, so that it has an (empty) body;
    ``lf`` -- every CRLF stored as LF."""

    lf: bool = False
    header_8bit: bytes | None = None
    blank_line: bool = False
    drop_from_line: bool = False

    def __bool__(self) -> bool:
        return self.lf or self.header_8bit is not None or self.blank_line or self.drop_from_line

    def apply(self, body: bytes) -> bytes:
        """``body`` as this server stores it (a copy: ``body`` is not changed)."""
        if self.drop_from_line:
            m = _FROM_LINE.match(body)
            if m is not None:
                body = body[m.end() :]
        if self.header_8bit is not None:
            end = header_end(body)
            head = body[:end]
            if _EIGHT_BIT.search(head):
                body = _EIGHT_BIT.sub(self.header_8bit, head) + body[end:]
        if self.blank_line and body and header_end(body) == len(body):
            body += b"\r\n"
        if self.lf:
            body = body.replace(b"\r\n", b"\n")
        return body

    def union(self, other: Alteration) -> Alteration:
        return Alteration(
            self.lf or other.lf,
            self.header_8bit or other.header_8bit,
            self.blank_line or other.blank_line,
            self.drop_from_line or other.drop_from_line,
        )

    def changes(self, body: bytes) -> tuple[str, ...]:
        """What this alteration changes in ``body`` (the source's bytes), in words."""
        out: list[str] = []
        if self.drop_from_line and _FROM_LINE.match(body):
            out.append("a leading mbox 'From ' line dropped")
            body = body[_FROM_LINE.match(body).end() :]  # type: ignore[union-attr]
        if self.header_8bit is not None and _EIGHT_BIT.search(body, 0, header_end(body)):
            out.append(f"8-bit header bytes replaced by {self.header_8bit.decode('ascii')!r}")
        if self.blank_line and body and header_end(body) == len(body):
            out.append("a blank line added after the header")
        if self.lf and b"\r\n" in body:
            out.append("line endings CRLF -> LF")
        return tuple(out)

    def describe(self) -> str:
        """The whole alteration in words (for the notes)."""
        parts: list[str] = []
        if self.drop_from_line:
            parts.append("a leading mbox 'From ' line dropped")
        if self.header_8bit is not None:
            parts.append(f"8-bit header bytes replaced by {self.header_8bit.decode('ascii')!r}")
        if self.blank_line:
            parts.append("a blank line added after a header without body")
        if self.lf:
            parts.append("line endings CRLF -> LF")
        return ", ".join(parts) or "nothing"


def _replacement(a: bytes, stored: bytes) -> bytes | None:
    """The one ASCII byte that took the place of 8-bit header bytes of ``a`` in
    ``stored`` (same length), judged at the first difference."""
    end = header_end(a)
    for i in range(min(end, len(a))):
        if a[i] != stored[i]:
            if a[i] >= 0x80 and 0x20 < stored[i] < 0x7F:
                return stored[i : i + 1]
            return None
    return None


#: The changes without a parameter, simplest first (``learn`` tries each with and
#: without 8-bit header bytes replaced).
_PLAIN = [
    Alteration(lf=lf, blank_line=blank, drop_from_line=drop)
    for drop in (False, True)
    for blank in (False, True)
    for lf in (False, True)
]


def learn(sent: bytes, stored: bytes) -> Alteration | None:
    """The recognised :class:`Alteration` that turns ``sent`` into exactly ``stored``
    (the simplest one), or ``None``: the bytes are equal, or differ in another way."""
    if sent == stored:
        return None
    for plain in _PLAIN:
        a = plain.apply(sent)
        if a == stored and a != sent:
            return plain
        if len(a) != len(stored):
            continue
        c = _replacement(a, stored)
        if c is not None:
            alt = Alteration(plain.lf, c, plain.blank_line, plain.drop_from_line)
            if alt.apply(sent) == stored:
                return alt
    return None


def learn_any(pairs: Iterable[tuple[bytes, bytes]]) -> Alteration | None:
    """The union of what each (sent, stored) pair teaches (``None``: nothing)."""
    out: Alteration | None = None
    for sent, stored in pairs:
        alt = learn(sent, stored)
        if alt is not None:
            out = alt if out is None else out.union(alt)
    return out


#: A recognised alteration never makes a message larger by more than this (the blank
#: line added after a header without body); it may make it smaller by any amount.
GROWS_AT_MOST = 2
