"""Preparing the destination for the copy: create the planned folders (a special folder
with its RFC 6154 attribute where the server offers CREATE-SPECIAL-USE) and subscribe
those subscribed on the source.  All idempotent, so the planning can be retried."""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Callable

from ..imap.errors import CommandError
from .context import EventHandler, check
from .model import Plan
from .refusals import per_message
from .store import Store, name_encoder

__all__ = ["prepare_destination"]

_PLAIN = re.compile(r"[^A-Za-z0-9 _.,+-]")


def plain_name(name: str, separator: str | None) -> str:
    """A conservative ASCII spelling of a folder name, keeping its hierarchy."""
    if not separator:
        return _PLAIN.sub("_", name)
    return separator.join(_PLAIN.sub("_", part) or "_" for part in name.split(separator))


def _outside_bmp(ch: str) -> bool:
    return ord(ch) > 0xFFFF  # emoji and the like: surrogate pairs in modified UTF-7


def _non_ascii_symbol(ch: str) -> bool:
    return ord(ch) > 0x7F and not (ch.isalnum() or unicodedata.category(ch).startswith("M"))


def _ascii_special(ch: str) -> bool:
    return ord(ch) <= 0x7F and _PLAIN.match(ch) is not None


def _non_ascii(ch: str) -> bool:
    return ord(ch) > 0x7F


#: The characters a server may refuse in a name, from the most to the least often
#: refused; each step replaces its class and every class before it.  Bounded: at most
#: four names are tried, whatever the name's length (docs/design.md, "Folder names").
_NARROWING: tuple[Callable[[str], bool], ...] = (
    _outside_bmp,
    _non_ascii_symbol,
    _ascii_special,
    _non_ascii,
)


def narrowed_names(name: str, separator: str | None) -> list[tuple[str, str]]:
    """The names to try, in order, when the destination refused ``name``: each keeps
    more of it than the next (the separator always), with what was replaced."""
    out: list[tuple[str, str]] = []
    for step in range(1, len(_NARROWING) + 1):
        classes = _NARROWING[:step]
        odd = [ch not in (separator, "_") and any(c(ch) for c in classes) for ch in name]
        replaced = "".join(dict.fromkeys(ch for ch, o in zip(name, odd, strict=True) if o))
        alt = "".join("_" if o else ch for ch, o in zip(name, odd, strict=True))
        if replaced and all(alt != a for a, _ in out):
            out.append((alt, replaced))
    return out


def _exists(r: object) -> bool:
    code = r.tagged.code  # type: ignore[attr-defined]
    return code is not None and code.name == "ALREADYEXISTS"


async def prepare_destination(
    dst: Store,
    plan: Plan,
    subscribed: set[str] | None,
    folder_errors: dict[str, str],
    on_event: EventHandler,
) -> None:
    """CREATE and SUBSCRIBE, pipelined: one round trip each, whatever the folder count.
    A folder whose name the destination refuses gets a plain name (the plan is updated)
    or an entry in ``folder_errors``."""
    if subscribed is None:
        subscribed = {m.name for m in await dst.list_subscribed()}
    use = {fp.dest_name: fp.create_use for fp in plan.folders if fp.create_use}
    created = [
        (name, raw, await dst.submit_create(raw, use.get(name))) for name, raw in plan.create
    ]
    for name, raw, fut in created:
        r = await fut
        exists = _exists(r)
        if not r.tagged.ok and not exists:
            # Throttled, unavailable, over quota: not about the name; the planning is
            # retried or the run stops (policy/retry.py).
            per_message(CommandError("CREATE", r.tagged))
        if not r.tagged.ok and not exists and name in use:
            # e.g. NO [USEATTR] (RFC 6154 section 3): a plain folder then.
            r = await (await dst.submit_create(raw))
            if not r.tagged.ok:
                per_message(CommandError("CREATE", r.tagged))
        if r.tagged.ok or _exists(r):
            on_event(f"created folder {name!r} on the destination")
        else:
            await _create_fallback(
                dst, plan, name, CommandError("CREATE", r.tagged), folder_errors, on_event
            )
    subs = [
        await dst.submit_subscribe(fp.dest_raw)
        for fp in plan.folders
        if fp.source.name not in folder_errors and fp.subscribed and fp.dest_name not in subscribed
    ]
    for fut in subs:
        check(await fut, "SUBSCRIBE")


def _under_inbox(dst: Store, plan: Plan, name: str) -> str | None:
    """``name`` under INBOX, when a refused top-level name may only be refused for being
    outside INBOX: the server has no NAMESPACE (no prefix is known), a separator, and
    the name is not INBOX's already."""
    sep = plan.dest_namespace.separator
    if dst.has("NAMESPACE") or plan.dest_namespace.prefix or not sep:
        return None
    if name.upper() == "INBOX" or name.upper().startswith("INBOX" + sep):
        return None
    return f"INBOX{sep}{name}"


async def _create_fallback(
    dst: Store,
    plan: Plan,
    name: str,
    exc: CommandError,
    folder_errors: dict[str, str],
    on_event: EventHandler,
) -> None:
    """The destination refused a folder name: replace only what it refuses.  The name
    is tried with fewer and fewer characters kept (:func:`narrowed_names`: characters
    outside the BMP, then other non-ASCII symbols, then ASCII specials, then every
    non-ASCII letter), then two plain variants; the first name it takes is used.
    None taken: the folder fails."""
    idx = next((i for i, f in enumerate(plan.folders) if f.dest_name == name), None)
    if idx is None:
        raise exc
    encode = name_encoder(dst)
    sep = plan.dest_namespace.separator
    plain = plain_name(name, sep)
    tries = narrowed_names(name, sep)
    tries += [(alt, "") for alt in (plain + "_", plain + "_2")]
    under = _under_inbox(dst, plan, name)
    if under is not None:
        # A server that keeps every folder under INBOX without a NAMESPACE to say so
        # (found by the matrix): the same name there first, then its narrowed forms.
        tries = [
            (under, ""),
            *((f"INBOX{sep}{alt}", r) for alt, r in narrowed_names(name, sep)),
            *tries,
        ]
    taken = {f.dest_name for f in plan.folders}
    # A run before this one may have made the folder already: use it, so that a
    # re-run neither makes a second folder nor copies the messages again.
    existing = {m.name for m in await dst.list_folders()}
    for alt, replaced in tries:
        if alt == name or alt in taken:
            continue
        if alt not in existing:
            try:
                await dst.create(encode(alt))
            except CommandError as refused:
                per_message(refused)  # a temporary refusal is not about the name
                continue
        what = f": {', '.join(repr(c) for c in replaced)} replaced by '_'" if replaced else ""
        if under is not None and alt.startswith(f"INBOX{sep}"):
            what += " (under INBOX: the server keeps its folders there and has no NAMESPACE)"
        why = (
            f"the destination refused the name {name!r} ({exc.server_text}); "
            f"the folder is {alt!r}{what}"
        )
        for i, fp in enumerate(plan.folders):  # every folder merged into it, too
            if fp.dest_name == name:
                plan.folders[i] = dataclasses.replace(
                    fp, dest_name=alt, dest_raw=encode(alt), reasons=(*fp.reasons, why)
                )
        made = "using existing" if alt in existing else "created"
        on_event(f"{made} folder {alt!r} on the destination instead of {name!r}{what}")
        return
    for fp in plan.folders:
        if fp.dest_name == name:
            folder_errors[fp.source.name] = (
                f"the destination refused to create {name!r}: {exc.server_text}"
            )
