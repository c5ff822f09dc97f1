"""The account check's child process: log in, list the folders, plan, answer, exit.

Started by :func:`yippiemove.service.checks.run_check` as ``python -P -m
yippiemove.service.checkproc --parent PID`` with the jail's isolation (its own session, a
clean environment, limits on address space and open files set before it reads its
request, death with its parent).  The check is untrusted protocol work: a hostile server
can only exhaust this process, never the web process that serves everyone.

Protocol: **stdin** one JSON object ``{"account", "address", "role", "dest",
"dest_address", "ca_file", "allow_insecure_hosts", "connect_timeout", "oauth_config",
"folders"}`` (``folders``: a checked ``folders`` object or null: its rules and filters
are planned with, its include/exclude give each folder's ``selected``)
(the passwords and OAuth2 grants in it, never in argv or the environment; the addresses the egress policy checked, connected
to as they are: no second DNS lookup), then
EOF; **stdout** one JSON object, the result (no secrets):

- ``{"ok": true, "folders": [{"name", "separator", "special_use", "messages", "bytes",
  "dest_name", "reasons", "selected"}...]}`` (``selected`` null without ``folders``)
- ``{"ok": false, "message": "..."}``: a sentence for the customer as is;
- ``{"ok": false, "imap_error": "AuthenticationError", "text": "...", "role": "...",
  "response": {"kind", "text"} or null}``: the service words it (``explain_imap_error``).

Exit status 0 with a result; :data:`EXIT_MEMORY` when the memory limit was hit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import sys
from typing import Any

from ..accounts import make_endpoint, ssl_context
from ..imap.errors import ImapError
from ..imap.protocol import ProtocolError
from ..jobs.jail import _die_with_parent
from ..oauth import OAuthConfig
from ..policy import folders as folder_policy
from ..policy.rules import RuleError, from_options
from ..transfer.engine import Mover
from ..transfer.identity import SameMailbox, same_address
from ..transfer.model import Options, Plan
from ..transfer.plan import select_folders
from ..transfer.refusals import PlanError

log = logging.getLogger("yippiemove.check")

#: The child ran out of its address space (MemoryError).
EXIT_MEMORY = 3


def _endpoint(
    account: dict[str, Any], ctx: Any, insecure: bool, oauth: OAuthConfig | None = None
) -> Any:
    return make_endpoint(account, ctx, insecure, oauth_config=oauth)


def _imap_error(exc: ImapError | ProtocolError, role: str) -> dict[str, Any]:
    response = getattr(exc, "response", None)
    return {
        "ok": False,
        "imap_error": type(exc).__name__,
        "text": str(exc),
        "role": role,
        "response": (
            {
                "kind": getattr(response, "kind", None) or getattr(response, "status", ""),
                "text": response.text.decode("utf-8", "replace"),
            }
            if response is not None
            else None
        ),
    }


async def check(request: dict[str, Any]) -> dict[str, Any]:
    """The check itself (what ``Service.check_account`` did in the web process before)."""
    account: dict[str, Any] = request["account"]
    dest: dict[str, Any] | None = request.get("dest")
    role: str = request.get("role", "account")
    insecure = bool(request.get("allow_insecure_hosts"))
    try:
        ctx = ssl_context(request.get("ca_file"))
    except (OSError, ValueError) as exc:
        return {"ok": False, "message": f"the service's CA file cannot be read: {exc}"}
    oauth = OAuthConfig.from_dict(request["oauth_config"]) if request.get("oauth_config") else None
    src_ep = dataclasses.replace(
        _endpoint(account, ctx, insecure, oauth), address=request.get("address")
    )
    dst_ep = (
        dataclasses.replace(
            _endpoint(dest, ctx, insecure, oauth), address=request.get("dest_address")
        )
        if dest is not None
        else src_ep
    )
    timeout = float(request.get("connect_timeout") or 20)
    selection: dict[str, Any] | None = request.get("folders")
    try:
        rules, filters = from_options(selection or {})
    except RuleError as exc:  # checked by the service before; never a crash here
        return {"ok": False, "message": f"folders.{exc}"}
    options = Options(connect_timeout=timeout, idle_timeout=60, rules=rules, filters=filters)
    mover = Mover(src_ep, dst_ep, options=options)
    src = dst = None
    try:
        try:
            src = await mover.connect(src_ep, role, read_only=True)
        except (ImapError, ProtocolError) as exc:
            return _imap_error(exc, role)
        if dest is not None:
            same = await asyncio.to_thread(same_address, src_ep, dst_ep)
            if same is not None:  # another name for the source (transfer/identity.py)
                return {"ok": False, "message": f"dest: {SameMailbox(same)}"}
            try:
                dst = await mover.connect(dst_ep, "destination")
            except (ImapError, ProtocolError) as exc:
                return _imap_error(exc, "dest")
        try:
            plan = await mover.make_plan(src, dst or src)
        except SameMailbox as exc:  # what the servers say (the planning checks it)
            return {"ok": False, "message": f"dest: {exc}"}
        except (ImapError, ProtocolError) as exc:
            return _imap_error(exc, role)
        try:
            selected = _selected(plan, selection)
        except PlanError as exc:
            return {"ok": False, "message": "folders.include: " + str(exc).replace("--folder ", "")}
    finally:
        for c in (src, dst):
            if c is not None:
                with contextlib.suppress(Exception):
                    await c.logout()
    return {
        "ok": True,
        "folders": [
            {
                "name": fp.source.name,
                "separator": fp.source.separator,
                "special_use": sorted(fp.source.special_use),
                "messages": fp.count,
                "bytes": fp.size,
                "dest_name": fp.dest_name if dest is not None else fp.source.name,
                "reasons": list(fp.reasons) if dest is not None else [],
                "selected": None if selected is None else fp.source.name in selected,
            }
            for fp in plan.folders
        ],
    }


def _selected(plan: Plan, selection: dict[str, Any] | None) -> set[str] | None:
    """The names the selection's include/exclude choose, as the transfer chooses them
    (transfer/plan.py ``select_folders``); None without a selection."""
    if selection is None:
        return None
    ns = folder_policy.Namespace(plan.source_namespace.prefix, plan.source_namespace.separator)
    boxes = [fp.source for fp in plan.folders]
    include, exclude = selection.get("include") or [], selection.get("exclude") or []
    return {m.name for m in select_folders(boxes, include, exclude, ns)}


async def _check_or_out_of_memory(request: dict[str, Any]) -> dict[str, Any]:
    """:func:`check`; a MemoryError in a transport callback (which asyncio would turn into
    a dropped connection, as in the job process: jobs/jail.py) is raised instead."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(check(request))
    out_of_memory = False

    def on_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        nonlocal out_of_memory
        if isinstance(context.get("exception"), MemoryError):
            out_of_memory = True
            task.cancel()
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(on_error)
    try:
        result = await task
    except asyncio.CancelledError:
        if out_of_memory:
            raise MemoryError from None
        raise
    if out_of_memory:
        raise MemoryError
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yippiemove.service.checkproc")
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    os.umask(0o077)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    try:
        request = json.loads(sys.stdin.buffer.read())
        sys.stdin.close()
        result = asyncio.run(_check_or_out_of_memory(request))
        del request
        sys.stdout.write(json.dumps(result, separators=(",", ":")))
        sys.stdout.flush()
    except MemoryError:
        return EXIT_MEMORY
    return 0


if __name__ == "__main__":
    sys.exit(main())
