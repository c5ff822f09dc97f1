"""Account checks and folder listings as answers, for the REST API (issue 17: parity).

The web's order steps check an account (log in, list) and show the folders with their
counts, sizes and destination names; these are the same checks
(:meth:`Service.check_account`: a limited child process, the check slots, the egress
policy) put as data for programs:

- what the service *refuses* to do (an account it may not connect to by the egress
  policy, plain text to a remote host, the same mailbox twice) is a
  :class:`~yippiemove.service.core.ServiceError` (400), as ordering it would be;
- what the *servers* answer (wrong password, nothing listening, a TLS problem, a host
  name that does not resolve) is the check's outcome: ``{"ok": false, "failure":
  {"kind", "side", "message", "next_step", "detail"}}`` in the words of
  policy/failures.py (``detail`` is the check's own sentence, never a password);
- too many checks under way is Busy (429), as on the web.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..jobs import spec
from ..policy.failures import describe, kind_of_text

if TYPE_CHECKING:
    from .core import Account, FolderInfo, Service

__all__ = ["account_check", "folder_listing"]

#: The check's messages name the account they are about (service/core.py).
_PREFIXES = (("source: ", "source"), ("destination: ", "dest"), ("dest: ", "dest"))


def _refusals(svc: Service, account: Account, role: str) -> Account:
    """The service's own refusals, before any connection: the account's fields (plain
    text to a remote host...) and the egress policy (a name that does not resolve is
    left to the check, whose answer it is)."""
    account = svc.validate_account(account, role)
    svc.pin(account.host, account.port, role, unresolved_ok=True)
    return account


def _failure(exc: Exception, side: str) -> dict[str, Any]:
    """A check's ServiceError as the failure a program reads."""
    raw = str(exc)
    for prefix, named in _PREFIXES:
        if raw.startswith(prefix):
            side, raw = named, raw[len(prefix) :]
            break
    return describe(raw, kind_of_text(raw), side) or {}


def _key(account: Account) -> tuple[str, int, str]:
    return account.host.lower(), account.port, account.username


async def _checked(
    svc: Service, account: Account, role: str, user_id: int, **kwargs: Any
) -> tuple[list[FolderInfo] | None, dict[str, Any] | None]:
    from .core import Busy, ServiceError

    try:
        folders = await svc.check_account(account, role=role, user_id=user_id, **kwargs)
    except Busy:
        raise
    except ServiceError as exc:
        if str(exc).startswith("folders."):  # an include that matches no folder: the
            raise  # request's mistake (400), not the server's answer
        return None, _failure(exc, role)
    return folders, None


async def account_check(svc: Service, user_id: int, account: Account, role: str) -> dict[str, Any]:
    """Log in to ``account`` and list its folders (nothing is changed on it): ``{"ok",
    "folders", "messages", "bytes", "failure"}`` (see the module's docstring)."""
    account = await asyncio.to_thread(_refusals, svc, account, role)
    folders, failure = await _checked(svc, account, role, user_id)
    if folders is None:
        return {"ok": False, "failure": failure}
    return {
        "ok": True,
        "folders": len(folders),
        "messages": sum(f.messages for f in folders),
        "bytes": sum(f.bytes for f in folders),
        "failure": None,
    }


async def folder_listing(
    svc: Service,
    user_id: int,
    source: Account,
    dest: Account | None,
    folders: dict[str, Any] | None,
) -> dict[str, Any]:
    """The source's folders as the transfer would plan them: counts and sizes (after
    the message filters of ``folders``), the destination names (with ``dest``: its
    namespace and separator, after the folder rules of ``folders``), whether each is
    ticked by default and, with ``folders``, whether its include/exclude select it."""
    from .core import ServiceError

    def refusals() -> tuple[Account, Account | None, dict[str, Any] | None]:
        src = _refusals(svc, source, "source")
        dst = _refusals(svc, dest, "dest") if dest is not None else None
        if dst is not None and _key(src) == _key(dst):
            raise ServiceError("dest: is the same account as the source")
        try:
            checked = spec.check_folders(folders) if folders is not None else None
        except spec.SpecError as exc:
            raise ServiceError(str(exc)) from None
        return src, dst, checked

    src, dst, checked = await asyncio.to_thread(refusals)
    kwargs: dict[str, Any] = {"folders": checked if checked is not None else None}
    if dst is not None:
        kwargs["dest"] = dst
    listed, failure = await _checked(svc, src, "source", user_id, **kwargs)
    if listed is None:
        return {"ok": False, "folders": [], "failure": failure}
    return {
        "ok": True,
        "folders": [
            {
                "name": f.name,
                "messages": f.messages,
                "bytes": f.bytes,
                "dest_name": f.dest_name,
                "selected_by_default": f.selected_by_default,
                "selected": f.selected,
                "reasons": list(f.reasons),
            }
            for f in listed
        ],
        "failure": None,
    }
