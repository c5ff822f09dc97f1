"""Is the destination the source under another name?  Refused before anything is written.

Two steps (docs/design.md, "The same mailbox under another name"):

1. :func:`same_address` -- before connecting: the same port, the same user (case
   ignored) and host names that resolve to a common address (every loopback address
   counts as one: ``localhost``, ``127.0.0.1``, ``::1``...).
2. :func:`same_mailbox` -- after logging in to both, before the destination is written
   (the engine's setup, before transfer/destination.py creates folders):

   * a server-wide identity of INBOX when both servers give one -- RFC 8474 MAILBOXID
     (OBJECTID: Cyrus) or Dovecot's ``STATUS (X-GUID)``: equal is the same mailbox,
     different is not, whatever else looks alike;
   * otherwise (Gmail, servers with neither): the same selectable folders, each with
     the same UIDNEXT and message count on both sides and, when it has ever held a
     message (UIDNEXT > 1), the same UIDVALIDITY -- and at least one such folder; between
     two Gmail accounts also the X-GM-MSGID of All Mail's newest message.  (A folder
     that never held mail is not compared by UIDVALIDITY: Dovecot answers 0 for one no
     session has opened yet, on one connection and not the other.)  Two distinct empty accounts may look identical
     (Dovecot derives UIDVALIDITY from the clock; the Gmail double counts from 1):
     they are not called the same -- nor does it matter, since moving an empty
     mailbox onto an identical one writes nothing.
     Nor are they called the same when this job's state file says it wrote into one of
     those destination folders under its present UIDVALIDITY (``ours``): a complete copy
     on a server that numbers as the source's does (the same second's UIDVALIDITY, a
     constant one) looks identical, and had the two been one mailbox, the run that wrote
     there would have been refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping, Sequence

from ..imap.client import MailboxInfo
from ..imap.errors import CommandError
from .model import Endpoint
from .refusals import PlanError
from .store import GmailStore, Store

__all__ = [
    "SameMailbox",
    "addresses",
    "canonical_address",
    "canonical_host",
    "mailbox_id",
    "same_address",
    "same_mailbox",
]


class SameMailbox(PlanError):
    """The source and the destination are one mailbox; ``str()`` says how it was seen."""

    def __init__(self, why: str) -> None:
        super().__init__(f"the source and the destination are the same mailbox ({why})")


#: Host names of this machine that need no resolving.
_LOCAL_NAMES = frozenset(("localhost", "localhost.localdomain", "ip6-localhost"))


def canonical_address(addr: str) -> str:
    """One spelling of an address: no zone index, IPv4-mapped IPv6 as IPv4, any loopback
    address as ``"loopback"`` (this machine), others compressed; a name lower-cased."""
    addr = addr.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr.lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return "loopback" if ip.is_loopback else ip.compressed


def canonical_host(host: str) -> str:
    """A host as written, in one spelling without resolving it: lower case, no brackets
    or trailing dot, an address as :func:`canonical_address`, this machine's own names
    as ``"loopback"``."""
    h = host.strip().strip("[]").rstrip(".").lower()
    return "loopback" if h in _LOCAL_NAMES else canonical_address(h)


def addresses(host: str, port: int) -> frozenset[str]:
    """The addresses ``host`` resolves to (:func:`canonical_address`); the host itself
    (:func:`canonical_host`) when it does not resolve (the connection will say why)."""
    name = canonical_host(host)
    if name == "loopback":
        return frozenset((name,))
    try:
        infos = socket.getaddrinfo(host.strip().strip("[]"), port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return frozenset((name,))
    return frozenset(canonical_address(str(info[4][0])) for info in infos) or frozenset((name,))


def same_address(a: Endpoint, b: Endpoint) -> str | None:
    """Why ``a`` and ``b`` are one account by their address (step 1), or None.  Resolves
    host names only when the ports and the users already agree."""
    if a.port != b.port or a.user.casefold() != b.user.casefold():
        return None
    if canonical_host(a.host) == canonical_host(b.host) != "loopback":
        return f"{a.label} and {b.label}"
    common = addresses(a.host, a.port) & addresses(b.host, b.port)
    if not common:
        return None
    at = "this machine" if common == {"loopback"} else ", ".join(sorted(common))
    return f"{a.host} and {b.host} are both {at}, port {a.port}, user {a.user}"


async def same_mailbox(
    src: Store,
    dst: Store,
    *,
    ids: tuple[str | None, str | None] | None = None,
    boxes: tuple[Sequence[MailboxInfo], Sequence[MailboxInfo]] | None = None,
    ours: Mapping[str, int] | None = None,
) -> str | None:
    """Why ``src`` and ``dst`` are one mailbox by what the servers say (step 2), or None.
    Only reads (the source is read-only); may leave another folder selected (EXAMINE).
    ``ids`` (:func:`mailbox_id` of each) and ``boxes`` (each side's LIST) when the caller
    has them already (the planning asks for them in its first round trip); ``ours``: the
    destination folders (name -> UIDVALIDITY) this job's state says it wrote into."""
    if ids is None:
        ids = (await mailbox_id(src), await mailbox_id(dst))
    if ids[0] is not None and ids[1] is not None and ids[0].split()[0] == ids[1].split()[0]:
        return f"both INBOXes have {ids[0]}" if ids[0] == ids[1] else None
    if boxes is None:
        boxes = await asyncio.gather(src.list_folders(), dst.list_folders())
    src_boxes, dst_boxes = boxes
    names = sorted(m.raw for m in src_boxes if m.selectable)
    if not names or names != sorted(m.raw for m in dst_boxes if m.selectable):
        return None
    items = "(UIDVALIDITY UIDNEXT MESSAGES)"
    try:
        # One side after the other: Dovecot answers a STATUS of a folder another session
        # is indexing for the first time as empty (UIDVALIDITY 0, UIDNEXT 1).
        a = await src.status_many(names, items)
        b = await dst.status_many(names, items)
    except CommandError:
        return None
    held = 0
    dst_names = {m.raw: m.name for m in dst_boxes}
    for raw in names:
        va, vb = a.get(raw, {}), b.get(raw, {})
        if ours and vb.get("UIDVALIDITY") is not None:
            if ours.get(dst_names[raw]) == vb.get("UIDVALIDITY"):
                return None  # our own copy (module doc)
        counts = [(v.get("UIDNEXT"), v.get("MESSAGES")) for v in (va, vb)]
        if None in counts[0] or counts[0] != counts[1]:
            return None
        if counts[0][0] == 1:
            # Never held a message: its UIDVALIDITY says little, and Dovecot may give 0
            # for a folder no session has opened yet, on one side only.
            continue
        if va.get("UIDVALIDITY") is None or va.get("UIDVALIDITY") != vb.get("UIDVALIDITY"):
            return None
        held += 1
    if not held:
        return None  # empty look-alikes: not evidence (module doc)
    if isinstance(src, GmailStore) and isinstance(dst, GmailStore):
        newest = await _gmail_newest(src, dst, src_boxes)
        if newest is None:
            return None
        why = f"All Mail's newest message is X-GM-MSGID {newest} on both"
        return f"{why}; the same {len(names)} folders, UIDVALIDITYs, UIDNEXTs and counts"
    return (
        f"the same {len(names)} folders on both sides, the {held} that have held mail "
        "with the same UIDVALIDITY, UIDNEXT and message count"
    )


async def mailbox_id(store: Store) -> str | None:
    """INBOX's server-wide identity (``ImapClient.mailbox_id``), or None."""
    get = getattr(store, "mailbox_id", None)  # a test's in-memory store has none
    return await get() if get is not None else None


async def _gmail_newest(
    src: GmailStore, dst: GmailStore, boxes: Sequence[MailboxInfo]
) -> int | None:
    """The X-GM-MSGID of All Mail's newest message when both sides have the same one."""
    all_mail = next((m.raw for m in boxes if "\\ALL" in m.flags), None)
    if all_mail is None:
        return None
    found: list[int | None] = []
    for store in (src, dst):
        try:
            await store.select(all_mail, readonly=True)
            ids = await store.fetch_msgids("*")
        except CommandError:
            return None
        found.append(max(ids.values()) if ids else None)
    return found[0] if found[0] is not None and found[0] == found[1] else None
