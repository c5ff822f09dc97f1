"""Gmail's IMAP extensions (capability X-GM-EXT-1) and UID COPY, as typed verbs.

Google documents the extensions at
<https://developers.google.com/workspace/gmail/imap/imap-extensions>: every message has a
64-bit ``X-GM-MSGID``, the same in every folder (a Gmail folder is a *label*: one message
is in as many folders as it has labels), and ``X-GM-LABELS`` lists its labels --
``"\\Inbox"``, ``"\\Sent"``, ``"\\Draft"``, ``"\\Important"``, ``"\\Starred"`` for the
system ones, the folder name (modified UTF-7, like mailbox names) for the user's.  Both
come in FETCH and can be searched.  On Gmail, COPY into a folder adds that folder's label
to the message (no second message), and answers COPYUID (RFC 4315) like any UIDPLUS server.

What the mover does with them is policy (``policy/gmail.py``) and engine
(``transfer/gmail.py``); this module only speaks the protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .client import ImapClient, MessageMeta, decode_mailbox, parse_meta
from .commands import CommandResult
from .errors import CommandError
from .protocol import ProtocolError, Untagged, format_uid_set, parse_uid_set

__all__ = [
    "CAPABILITY",
    "IndexEntry",
    "copy_uids",
    "copyuid",
    "fetch_index",
    "fetch_labelled_meta",
    "fetch_msgids",
    "has_gmail_extensions",
    "parse_labels",
]

#: The capability of a server with Gmail's extensions.
CAPABILITY = "X-GM-EXT-1"

_LABELLED_ITEMS = b"(UID RFC822.SIZE FLAGS INTERNALDATE X-GM-LABELS)"
_INDEX_ITEMS = b"(UID RFC822.SIZE INTERNALDATE X-GM-MSGID)"
_MSGID_ITEMS = b"(UID X-GM-MSGID)"
#: UIDs per command, so that command lines stay short whatever the UID set looks like.
_CHUNK = 2000


def has_gmail_extensions(client: ImapClient) -> bool:
    return client.has(CAPABILITY)


def parse_labels(value: object, *, utf8: bool = False) -> frozenset[str]:
    """An ``X-GM-LABELS`` value as label names: system labels as sent (``\\Inbox``),
    user labels decoded from modified UTF-7 (RFC 3501 5.1.3), or from UTF-8 when the
    session enabled UTF8=ACCEPT (``utf8``)."""
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise ProtocolError(f"malformed X-GM-LABELS: {value!r:.80}")
    out: set[str] = set()
    for tok in value:
        if isinstance(tok, str):
            raw = tok.encode("latin-1")
        elif isinstance(tok, bytes):
            raw = tok
        else:
            raise ProtocolError(f"malformed label in X-GM-LABELS: {tok!r:.80}")
        if raw.startswith(b"\\"):
            out.add(raw.decode("latin-1"))
        else:
            out.add(decode_mailbox(raw, utf8=utf8))
    return frozenset(out)


def _msgid(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ProtocolError(f"malformed X-GM-MSGID: {value!r:.40}") from None


async def _fetch(
    client: ImapClient,
    uids: Sequence[int] | str,
    items: bytes,
    on: Callable[[dict[str, object]], None],
) -> None:
    """``UID FETCH`` in chunks, pipelined; ``on(dict)`` gets each FETCH item dict."""
    sets = (
        [uids]
        if isinstance(uids, str)
        else [format_uid_set(sorted(uids)[i : i + _CHUNK]) for i in range(0, len(uids), _CHUNK)]
    )

    def handler(u: Untagged) -> None:
        if u.kind == "FETCH" and u.data and isinstance(u.data[0], dict):
            on(u.data[0])

    futs = [await client.conn.submit("UID FETCH", s, items, on_untagged=handler) for s in sets if s]
    for f in futs:
        res = await f
        if not res.tagged.ok:
            raise CommandError("UID FETCH", res.tagged)


async def fetch_labelled_meta(
    client: ImapClient, uids: Sequence[int] | str = "1:*"
) -> list[tuple[MessageMeta, frozenset[str]]]:
    """Metadata (UID, size, flags, INTERNALDATE) and ``X-GM-LABELS`` of messages of the
    selected folder, in UID order.  Gmail leaves the selected folder's own label out of
    X-GM-LABELS; in ``[Gmail]/All Mail`` (which is no label) every label is listed."""
    out: list[tuple[MessageMeta, frozenset[str]]] = []

    def on(item: dict[str, object]) -> None:
        if "UID" in item and "RFC822.SIZE" in item:
            out.append((parse_meta(item), parse_labels(item.get("X-GM-LABELS"), utf8=client.utf8)))

    await _fetch(client, uids, _LABELLED_ITEMS, on)
    out.sort(key=lambda x: x[0].uid)
    return out


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One message of a Gmail folder: UID, size, INTERNALDATE and X-GM-MSGID."""

    uid: int
    size: int
    internaldate: bytes
    msgid: int


async def fetch_index(client: ImapClient, uids: Sequence[int] | str = "1:*") -> list[IndexEntry]:
    """UID, size, INTERNALDATE and X-GM-MSGID of messages of the selected folder."""
    out: list[IndexEntry] = []

    def on(item: dict[str, object]) -> None:
        try:
            uid = int(item["UID"])  # type: ignore[call-overload]
            size = int(item["RFC822.SIZE"])  # type: ignore[call-overload]
        except (KeyError, TypeError, ValueError):
            return
        date = item.get("INTERNALDATE")
        if not isinstance(date, bytes):
            raise ProtocolError("malformed INTERNALDATE in FETCH answer")
        out.append(IndexEntry(uid, size, date, _msgid(item.get("X-GM-MSGID"))))

    await _fetch(client, uids, _INDEX_ITEMS, on)
    out.sort(key=lambda e: e.uid)
    return out


async def fetch_msgids(client: ImapClient, uids: Sequence[int] | str = "1:*") -> dict[int, int]:
    """UID -> X-GM-MSGID of messages of the selected folder."""
    out: dict[int, int] = {}

    def on(item: dict[str, object]) -> None:
        if "UID" in item:
            out[int(item["UID"])] = _msgid(item.get("X-GM-MSGID"))  # type: ignore[call-overload]

    await _fetch(client, uids, _MSGID_ITEMS, on)
    return out


def copyuid(res: CommandResult) -> dict[int, int]:
    """Source UID -> destination UID from a COPY's ``[COPYUID v src dst]`` (RFC 4315);
    empty without the code (nothing copied, or a server without UIDPLUS)."""
    code = res.tagged.code
    if code is None or code.name != "COPYUID":
        return {}
    parts = code.args.split()
    if len(parts) != 3:
        raise ProtocolError(f"malformed COPYUID code: {code.args[:100]!r}")
    try:
        src = parse_uid_set(parts[1])
        dst = parse_uid_set(parts[2])
    except ValueError as exc:
        raise ProtocolError(f"malformed COPYUID code: {code.args[:100]!r}") from exc
    if len(src) != len(dst):
        raise ProtocolError(f"COPYUID sets differ in length: {code.args[:100]!r}")
    return dict(zip(src, dst, strict=True))


async def copy_uids(client: ImapClient, uids: Sequence[int], mailbox: bytes) -> dict[int, int]:
    """``UID COPY uids mailbox`` from the selected folder; source UID -> new UID.

    On Gmail this adds ``mailbox``'s label to the messages.  Raises CommandError on NO/BAD.
    """
    out: dict[int, int] = {}
    ordered = sorted(set(uids))
    futs = [
        await client.conn.submit(
            "UID COPY", format_uid_set(ordered[i : i + _CHUNK]), client.quote_name(mailbox)
        )
        for i in range(0, len(ordered), _CHUNK)
    ]
    for f in futs:
        res = await f
        if not res.tagged.ok:
            raise CommandError("UID COPY", res.tagged)
        out.update(copyuid(res))
    return out
