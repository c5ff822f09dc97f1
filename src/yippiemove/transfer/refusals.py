"""How the engine treats a server's refusal of one command (policy/retry.py decides)."""

from __future__ import annotations

from ..imap.errors import CommandError
from ..policy import retry as retry_policy

__all__ = ["FolderError", "PlanError", "per_message"]


class PlanError(Exception):
    """The transfer cannot be planned as asked (e.g. --folder names no folder)."""


class FolderError(Exception):
    """One folder cannot be copied (it vanished, or its name is refused); the rest goes on."""


def per_message(refusal: CommandError) -> None:
    """A refused APPEND or UID FETCH fails its message(s) (a refused CREATE: that folder
    name), and the rest goes on -- unless the answer is about the connection or the
    account (throttled, unavailable, over quota: policy/retry.py); then it is raised, to
    retry the pass or the planning, or to stop the transfer."""
    if retry_policy.classify(refusal).kind != retry_policy.MESSAGE:
        raise refusal
