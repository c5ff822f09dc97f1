"""The source-untouched guard for servers that can snapshot an account (Cyrus, the Gmail
double, any scripted server): see docs/design.md "The source-untouched guard".

A server takes part by having one method, :meth:`Snapshots.snapshot`: the state of one
account as a comparable value, preferably a :data:`Snapshot` (folder -> (UIDVALIDITY,
UID -> (flags, sha256 of the bytes))), so that a difference can be told in words.  Its
fixture then does::

    with guard_sources(request, server, users=lambda: server_users, loaders=(...)):
        yield server

The guard snapshots every source account (a user whose name starts with ``src``, the
convention of the Dovecot guard) when the fixture starts (or, given ``fresh``, expects an
account no loader filled to be a new, empty one), again after each call of one
of the server's ``loaders`` (the methods a test loads mail with, e.g. ``deliver_many``:
what the test itself put there is the source's "before"), and compares at teardown, while
the server still runs.  A test marked ``@pytest.mark.source_writes(reason)`` is not checked.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import pytest

#: folder name -> (UIDVALIDITY or None for a \\Noselect name, UID -> (flags, sha256 hex)).
Snapshot = Mapping[str, tuple[int | None, Mapping[int, tuple[frozenset[str], str]]]]


class Snapshots(Protocol):
    """A server whose accounts can be snapshotted (the one interface the guard needs)."""

    def snapshot(self, user: str) -> object:
        """The account's folders, UIDVALIDITY, UIDs, flags and hashes of the bytes."""
        ...


def is_source(user: str) -> bool:
    """A source account: its name starts with ``src`` (src, src2, src@gmail.test)."""
    return user.startswith("src")


def differences(user: str, before: object, after: object) -> list[str]:
    """What changed, in words (for a :data:`Snapshot`; else one line)."""
    if before == after:
        return []
    if not (isinstance(before, Mapping) and isinstance(after, Mapping)):
        return [f"{user}: the account's snapshot changed"]
    out: list[str] = []
    for folder in sorted(set(before) | set(after)):
        if folder not in after:
            out.append(f"{user}: folder deleted or renamed: {folder}")
            continue
        if folder not in before:
            out.append(f"{user}: folder created: {folder}")
            continue
        (v0, m0), (v1, m1) = before[folder], after[folder]
        if v0 != v1 and not m0 and not m1:
            continue  # imap4d gives an INBOX not yet on disk a new UIDVALIDITY at each look
        if v0 != v1:
            out.append(f"{user}: {folder}: UIDVALIDITY {v0} -> {v1}")
            continue
        for uid in sorted(set(m0) | set(m1)):
            if uid not in m1:
                out.append(f"{user}: {folder}: UID {uid} expunged")
            elif uid not in m0:
                out.append(f"{user}: {folder}: UID {uid} added")
            elif m0[uid][1] != m1[uid][1]:
                out.append(f"{user}: {folder}: UID {uid} bytes changed")
            elif m0[uid][0] != m1[uid][0]:
                out.append(
                    f"{user}: {folder}: UID {uid} flags {sorted(m0[uid][0])} -> {sorted(m1[uid][0])}"
                )
    return out or [f"{user}: the account's snapshot changed"]


class SourceGuard:
    """Baselines of one server's source accounts; see the module docstring."""

    def __init__(
        self,
        server: Snapshots,
        users: Callable[[], Iterable[str]],
        fresh: Callable[[str], Iterable[str]] | None = None,
    ) -> None:
        self.server = server
        self._users = users
        #: The folders of an account nobody touched yet (when snapshots are costly): then
        #: no snapshot is taken at the start; an account no loader filled is expected at
        #: teardown to hold just these folders, empty (any UIDVALIDITY).
        self._fresh = fresh
        self.baselines: dict[str, object] = {}
        if fresh is None:
            for user in self._users():
                self.rebaseline(user)

    def rebaseline(self, user: object) -> None:
        if isinstance(user, str) and is_source(user):
            self.baselines[user] = self.server.snapshot(user)

    def wrap(self, name: str) -> None:
        """Rebaseline the account (first argument) after each call of ``server.name``;
        a method returning a context manager (a set-up session) rebaselines on its exit."""
        method = getattr(self.server, name)

        @functools.wraps(method)
        def wrapped(user: Any, *args: Any, **kwargs: Any) -> Any:
            result = method(user, *args, **kwargs)
            if isinstance(result, contextlib.AbstractContextManager):
                return self._after(result, user)
            self.rebaseline(user)
            return result

        setattr(self.server, name, wrapped)

    @contextlib.contextmanager
    def _after(self, cm: contextlib.AbstractContextManager[Any], user: object) -> Iterator[Any]:
        with cm as value:
            yield value
        self.rebaseline(user)

    def changes(self) -> list[str]:
        out: list[str] = []
        for user in self._users():
            if not is_source(user) or user in self.baselines:
                continue
            if self._fresh is None:
                self.rebaseline(user)  # an account added without a loader: from now on
                continue
            after = self.server.snapshot(user)
            assert isinstance(after, Mapping)
            before = {
                name: (after[name][0] if name in after else None, {}) for name in self._fresh(user)
            }
            out += differences(user, before, after)
        for user, before in self.baselines.items():
            out += differences(user, before, self.server.snapshot(user))
        return out


def fail_on_changes(changes: list[str]) -> None:
    if changes:
        pytest.fail(
            "a source mailbox was changed over IMAP (the source must stay untouched):\n  "
            + "\n  ".join(changes[:20]),
            pytrace=False,
        )


@contextlib.contextmanager
def guard_sources(
    request: pytest.FixtureRequest,
    server: Snapshots,
    *,
    users: Callable[[], Iterable[str]],
    loaders: Iterable[str] = (),
    running: Callable[[], bool] = lambda: True,
    fresh: Callable[[str], Iterable[str]] | None = None,
) -> Iterator[SourceGuard | None]:
    """Guard a running server's source accounts for the test of ``request``; the check
    runs when the block ends (before the server is stopped).  A server the test stopped
    itself is not checked (``running``)."""
    if request.node.get_closest_marker("source_writes") is not None:
        yield None
        return
    guard = SourceGuard(server, users, fresh)
    for name in loaders:
        guard.wrap(name)
    yield guard
    if running():
        fail_on_changes(guard.changes())
