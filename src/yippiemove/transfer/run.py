"""One transfer put together, once for both front doors (``yippiemove move`` and the
service's job process): endpoints + options + provider presets -> what the
:class:`~yippiemove.transfer.engine.Mover` needs.

The front doors differ in where the accounts and options come from (arguments and
password files; the job spec) and in what they do around the run (a progress bar and a
plan print-out; progress lines on stdout); they build the same :class:`Options` with
:func:`make_options`, apply the providers' limits with :func:`prepare`, open the state
with :meth:`Transfer.open_state`, and end with :mod:`yippiemove.transfer.report`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..policy import providers
from ..policy.providers import Provider
from ..policy.rules import FolderRules, MessageFilter
from .engine import Mover
from .model import Endpoint, Options, Progress
from .state import State, StateError

__all__ = [
    "Transfer",
    "apply_limits",
    "make_options",
    "prepare",
    "worker_counts",
]


def worker_counts(connections: int | None) -> dict[str, int]:
    """Options fields for a worker count: ``None`` keeps the automatic choice (2, more to
    far servers); a number is used for near and far servers alike."""
    if connections is None:
        return {}
    return {"connections": connections, "far_connections": connections}


def make_options(
    *,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    rules: FolderRules | None = None,
    filters: MessageFilter | None = None,
    connections: int | None = None,
    retries: int = Options.retries,
    max_backoff: float = Options.max_backoff,
    idle_timeout: float = Options.idle_timeout,
    connect_timeout: float | None = None,
    dry_run: bool = False,
    verify_content: bool = False,
) -> Options:
    """The transfer's :class:`Options`; every default is :class:`Options`'s own (the one
    place they are written).  ``connect_timeout`` defaults to the smaller of
    ``Options.connect_timeout`` and ``idle_timeout``."""
    return Options(
        include=list(include),
        exclude=list(exclude),
        rules=rules if rules is not None else FolderRules(),
        filters=filters if filters is not None else MessageFilter(),
        dry_run=dry_run,
        verify_content=verify_content,
        **worker_counts(connections),
        retries=retries,
        max_backoff=max_backoff,
        idle_timeout=idle_timeout,
        connect_timeout=(
            min(Options.connect_timeout, idle_timeout)
            if connect_timeout is None
            else connect_timeout
        ),
    )


def apply_limits(
    options: Options,
    source: Provider,
    dest: Provider,
    *,
    oauth_source: bool = False,
    oauth_dest: bool = False,
) -> tuple[Options, list[str]]:
    """Options that respect both providers' limits (:func:`providers.limits`), and what
    was changed and why; ``options`` itself is left as it was.  ``oauth_*``: that side
    signs in with OAuth2 (no note about OAuth2-only providers then)."""
    lim = providers.limits(source, dest, oauth_source=oauth_source, oauth_dest=oauth_dest)
    opts = dataclasses.replace(options)
    notes: list[str] = []
    cap = lim.max_connections
    if cap is not None:
        if opts.connections > cap:
            notes.append(lim.connections_note(opts.connections))
            opts.connections = cap
        opts.far_connections = min(opts.far_connections, cap)
    size = lim.max_message_size
    if size is not None and (opts.max_message_size is None or size < opts.max_message_size):
        opts.max_message_size = size
        opts.max_message_size_label = lim.max_message_size_label
        notes.append(lim.max_message_size_note)
    notes.extend(lim.sign_in_notes)
    return opts, notes


@dataclass
class Transfer:
    """Everything one run needs but the state: the two accounts, their presets, and
    the options with the presets' limits applied (``notes`` says what they changed)."""

    source: Endpoint
    dest: Endpoint
    options: Options
    source_provider: Provider
    dest_provider: Provider
    notes: list[str]

    def open_state(self, path: Path) -> State:
        """The per-job state file, labelled with the two accounts (raises StateError)."""
        state = State(path)
        try:
            state.set_meta("source", self.source.label)
            state.set_meta("dest", self.dest.label)
        except BaseException:
            with contextlib.suppress(StateError):  # the first error is the one to tell
                state.close()
            raise
        return state

    def mover(
        self,
        *,
        state: State | None,
        progress: Progress,
        on_event: Callable[[str], None] | None,
    ) -> Mover:
        return Mover(
            self.source,
            self.dest,
            state=state,
            options=self.options,
            progress=progress,
            on_event=on_event,
        )

    def presets(self) -> dict[str, Any]:
        """The report's ``presets``: which presets applied, and what they changed."""
        return {
            "source": self.source_provider.key,
            "dest": self.dest_provider.key,
            "notes": self.notes,
        }

    def bandwidth_warnings(self, total_bytes: int) -> list[str]:
        return providers.bandwidth_warnings(total_bytes, self.source_provider, self.dest_provider)


def prepare(
    source: Endpoint,
    dest: Endpoint,
    options: Options,
    *,
    source_provider: Provider | None = None,
    dest_provider: Provider | None = None,
) -> Transfer:
    """A :class:`Transfer`; a provider not given is found by its server (as an
    ``imap://`` URL on the command line is), else generic."""
    sp = source_provider or providers.for_host(source.host, source.user) or providers.GENERIC
    dp = dest_provider or providers.for_host(dest.host, dest.user) or providers.GENERIC
    opts, notes = apply_limits(
        options,
        sp,
        dp,
        oauth_source=source.oauth is not None,
        oauth_dest=dest.oauth is not None,
    )
    return Transfer(source, dest, opts, sp, dp, notes)
