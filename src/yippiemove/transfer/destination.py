"""Preparing the destination for the copy: create the planned folders (a special folder
with its RFC 6154 attribute where the server offers CREATE-SPECIAL-USE) and subscribe
those subscribed on the source.  All idempotent, so the planning can be retried."""

from __future__ import annotations

import dataclasses
import re

from ..imap import utf7
from ..imap.errors import CommandError
from .context import EventHandler, check
from .model import Plan
from .refusals import per_message
from .store import Store

__all__ = ["prepare_destination"]

_PLAIN = re.compile(r"[^A-Za-z0-9 _.,+-]")


def plain_name(name: str, separator: str | None) -> str:
    """A conservative ASCII spelling of a folder name, keeping its hierarchy."""
    if not separator:
        return _PLAIN.sub("_", name)
    return separator.join(_PLAIN.sub("_", part) or "_" for part in name.split(separator))


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


async def _create_fallback(
    dst: Store,
    plan: Plan,
    name: str,
    exc: CommandError,
    folder_errors: dict[str, str],
    on_event: EventHandler,
) -> None:
    """The destination refused a folder name: try a plain one, else fail the folder."""
    idx = next((i for i, f in enumerate(plan.folders) if f.dest_name == name), None)
    plain = plain_name(name, plan.dest_namespace.separator)
    taken = {f.dest_name for f in plan.folders}
    # A run before this one may have made the plain folder already: use it, so that a
    # re-run neither makes a second folder nor copies the messages again.
    existing = {m.name for m in await dst.list_folders()} if idx is not None else set()
    for alt in (plain, plain + "_", plain + "_2"):
        if alt == name or alt in taken or idx is None:
            continue
        if alt not in existing:
            try:
                await dst.create(utf7.encode(alt))
            except CommandError as refused:
                per_message(refused)  # a temporary refusal is not about the name
                continue
        why = f"the destination refused the name {name!r} ({exc.server_text})"
        for i, fp in enumerate(plan.folders):  # every folder merged into it, too
            if fp.dest_name == name:
                plan.folders[i] = dataclasses.replace(
                    fp, dest_name=alt, dest_raw=utf7.encode(alt), reasons=(*fp.reasons, why)
                )
        made = "using existing" if alt in existing else "created"
        on_event(f"{made} folder {alt!r} on the destination instead of {name!r}")
        return
    if idx is None:
        raise exc
    for fp in plan.folders:
        if fp.dest_name == name:
            folder_errors[fp.source.name] = (
                f"the destination refused to create {name!r}: {exc.server_text}"
            )
