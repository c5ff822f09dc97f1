"""The client's command state, sans I/O: tags, commands in flight, and where responses go.

Theory of operation
-------------------
:class:`ClientState` is the client side of one IMAP connection without the connection:
bytes from the server go in (:meth:`ClientState.receive_data`), *events* come out; a
command goes in (:meth:`ClientState.send`), its tag and the bytes to write come out.
The I/O layer (:mod:`.connection`) owns the socket, TLS, timeouts and the futures; it
writes what ``send`` returns and turns events into results.  Nothing here blocks,
reads a clock or touches a socket, so all of it is tested from bytes
(tests/imap/test_commands.py).

Many commands may be in flight at once (pipelining, RFC 3501 5.5).  A tagged
completion ends the command with that tag.  Untagged data carries no tag, so it is
routed by kind: each command says which kinds it collects (:data:`WANTS`, after RFC
3501 7: LIST answers LIST, STATUS answers STATUS...), and a response goes to the
*oldest* command in flight that collects its kind.  Servers may run pipelined commands
concurrently (Dovecot does), so the output of one command can arrive before the
completion of an earlier one, and two commands' FETCH output may interleave: routing by
kind keeps a LIST's answers out of a STATUS, and FETCH output of several ``UID FETCH``
commands goes to one handler that matches bodies by UID (the client's collectors).  A
command collects its untagged data in a list (:class:`CommandResult`), or hands each
response to its ``handler`` as it arrives (a whole :class:`.protocol.FetchRun` to the
handler's ``on_run`` method when it has one).  What no command collects (EXISTS,
EXPUNGE, flag changes...) is an :class:`Unsolicited` event.

A *read-only* state (``ClientState(read_only=True)``, the source of a transfer) sends
only the verbs of :data:`READ_ONLY_VERBS` -- EXAMINE but not SELECT; no APPEND, CREATE,
DELETE, RENAME, STORE, COPY, MOVE, EXPUNGE, SUBSCRIBE... -- and no FETCH that would set
``\\Seen`` (``BODY[`` without ``.PEEK``, ``RFC822``, ``RFC822.TEXT``); anything else raises
:class:`.errors.ReadOnlyViolation` from :meth:`ClientState.send`, before a tag is taken or
a byte encoded, so no layer above can write through it.

Events, in the order the server's bytes imply:

* :class:`Greeting`           -- the first response of the connection;
* :class:`Completed`          -- a command's tagged completion, with its untagged data;
* :class:`HandlerFailed`      -- a command's handler raised (e.g. a FETCH without a
  UID); the command fails with it, once, and the connection stays in step;
* :class:`ContinuationRequest` -- ``+``, when :meth:`ClientState.expect_continuation`
  said a synchronizing literal waits for it;
* :class:`Unsolicited`        -- untagged data no command in flight collects;
* :class:`Bye`                -- the server is closing the connection; the commands
  still in flight stay so until the I/O layer sees the connection end;
* :class:`Broken`             -- the server broke the protocol (unparseable data, a tag
  we never sent, a ``+`` nobody waits for); always the last event: the connection
  must be closed, further data is ignored.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ReadOnlyViolation
from .protocol import (
    Continuation,
    FetchRun,
    Literal,
    ProtocolError,
    ResponseParser,
    Tagged,
    Untagged,
    encode_command,
)

__all__ = [
    "READ_ONLY_VERBS",
    "WANTS",
    "Broken",
    "Bye",
    "ClientState",
    "Command",
    "CommandResult",
    "Completed",
    "ContinuationRequest",
    "Event",
    "Greeting",
    "HandlerFailed",
    "ReadOnlyViolation",
    "Unsolicited",
    "UntaggedHandler",
    "changes_mailbox",
]

UntaggedHandler = Callable[[Untagged], None]

_SELECTING = frozenset(("FLAGS", "EXISTS", "RECENT", "OK", "NO", "BAD"))
#: Which untagged responses belong to which command (RFC 3501 7); a command not named
#: here collects none.  SELECT/EXAMINE take what describes the mailbox they open.
WANTS: dict[str, frozenset[str]] = {
    "FETCH": frozenset(("FETCH",)),
    "UID FETCH": frozenset(("FETCH",)),
    "STORE": frozenset(("FETCH",)),
    "UID STORE": frozenset(("FETCH",)),
    "SEARCH": frozenset(("SEARCH", "ESEARCH")),
    "UID SEARCH": frozenset(("SEARCH", "ESEARCH")),
    "STATUS": frozenset(("STATUS",)),
    "LIST": frozenset(("LIST",)),
    "LSUB": frozenset(("LSUB",)),
    "CAPABILITY": frozenset(("CAPABILITY",)),
    "NAMESPACE": frozenset(("NAMESPACE",)),
    "ENABLE": frozenset(("ENABLED",)),
    "ID": frozenset(("ID",)),
    "SELECT": _SELECTING,
    "EXAMINE": _SELECTING,
}
_NOTHING: frozenset[str] = frozenset()

#: What a read-only connection may send: an allow-list, so that a verb nobody thought of
#: is refused too.  EXAMINE opens a mailbox read-only (RFC 3501 6.3.2: no \Seen, no
#: \Recent change, and CLOSE then expunges nothing); SELECT is not here.
READ_ONLY_VERBS: frozenset[str] = frozenset(
    (
        "CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "AUTHENTICATE", "LOGIN", "ID",
        "ENABLE", "COMPRESS", "NAMESPACE", "LIST", "LSUB", "XLIST", "STATUS", "EXAMINE",
        "UNSELECT", "CLOSE", "CHECK", "IDLE", "FETCH", "UID FETCH", "SEARCH",
        "UID SEARCH", "SORT", "UID SORT", "THREAD", "UID THREAD", "GETQUOTA",
        "GETQUOTAROOT", "MYRIGHTS", "GETACL", "LISTRIGHTS", "GETMETADATA",
    )
)  # fmt: skip
#: FETCH items that set \Seen (RFC 3501 6.4.5): BODY[...] without .PEEK, RFC822, RFC822.TEXT.
_SEEN_SETTING = re.compile(rb"(?<![.\w])BODY\[|(?<![.\w])RFC822(?:\.TEXT)?(?![.\w])", re.I)


def changes_mailbox(name: str) -> bool:
    """Whether a command named ``name`` may change a mailbox: every verb a read-only
    connection refuses, except SELECT (which at most clears \\Recent)."""
    verb = " ".join(name.upper().split())
    return verb not in READ_ONLY_VERBS and verb != "SELECT"


def _check_read_only(name: str, args: tuple[bytes | str | int | Literal, ...]) -> None:
    verb = " ".join(name.upper().split())
    if verb not in READ_ONLY_VERBS:
        raise ReadOnlyViolation(verb)
    if verb in ("FETCH", "UID FETCH"):
        for a in args:
            raw = a.encode("ascii", "replace") if isinstance(a, str) else a
            if isinstance(raw, bytes) and _SEEN_SETTING.search(raw):
                raise ReadOnlyViolation(verb, "it would set \\Seen (use BODY.PEEK)")


@dataclass(slots=True)
class CommandResult:
    """A completed command: its tagged response and the untagged data it collected."""

    tagged: Tagged
    untagged: list[Untagged] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Command:
    """One command in flight."""

    tag: str
    name: str
    #: Untagged kinds this command collects.
    wants: frozenset[str]
    #: Takes each collected response instead of :attr:`untagged` (see the module doc).
    handler: UntaggedHandler | None
    untagged: list[Untagged] = field(default_factory=list)
    #: What the handler raised first, if it did.
    error: Exception | None = None
    #: The I/O layer's handle for the command (the connection keeps its future here).
    waiter: Any = None


@dataclass(frozen=True, slots=True)
class Greeting:
    response: Untagged


@dataclass(frozen=True, slots=True)
class Completed:
    command: Command
    result: CommandResult


@dataclass(frozen=True, slots=True)
class HandlerFailed:
    command: Command
    error: Exception


@dataclass(frozen=True, slots=True)
class ContinuationRequest:
    text: bytes


@dataclass(frozen=True, slots=True)
class Unsolicited:
    response: Untagged


@dataclass(frozen=True, slots=True)
class Bye:
    response: Untagged


@dataclass(frozen=True, slots=True)
class Broken:
    """The server broke the protocol; ``reason`` reads after the server's name
    (``"sent invalid IMAP data: ..."``)."""

    reason: str
    #: the parser's error, when it was one (a literal over its context's cap...)
    error: ProtocolError | None = None


Event = Greeting | Completed | HandlerFailed | ContinuationRequest | Unsolicited | Bye | Broken


class ClientState:
    """Tags, the table of commands in flight and the routing of responses (sans I/O).

    ``greeted=False`` (the default): the first response is the server's greeting.
    """

    __slots__ = (
        "_broken",
        "_by_kind",
        "_continuing",
        "_greeted",
        "_parser",
        "_tagnum",
        "pending",
        "read_only",
    )

    def __init__(self, *, greeted: bool = False, read_only: bool = False) -> None:
        self._parser = ResponseParser(bulk=True)
        self._tagnum = 0
        self._greeted = greeted
        self._broken = False
        #: Commands in flight by tag, oldest first.
        self.pending: dict[str, Command] = {}
        # For each untagged kind, the commands in flight that collect it, oldest first:
        # routing is then one lookup however many commands are in flight (a scan of
        # them all per EXISTS made thousands of pipelined APPENDs quadratic).
        self._by_kind: dict[str, OrderedDict[str, Command]] = {}
        self._continuing: Command | None = None
        #: Only :data:`READ_ONLY_VERBS` may be sent (see the module doc); never unset.
        self.read_only = read_only

    @property
    def in_flight(self) -> int:
        return len(self.pending)

    @property
    def broken(self) -> bool:
        return self._broken

    # ------------------------------------------------------------------ commands

    def send(
        self,
        name: str,
        *args: bytes | str | int | Literal,
        handler: UntaggedHandler | None = None,
        nonsync_max: int = -1,
    ) -> tuple[Command, list[bytes | Literal]]:
        """A new command in flight, and its segments to write (see
        :func:`.protocol.encode_command`; ``nonsync_max`` from :func:`.protocol.nonsync_limit`).
        Raises :class:`.errors.ReadOnlyViolation` on a read-only state for a command that
        could write (nothing is then in flight or encoded).
        """
        if self.read_only:
            _check_read_only(name, args)
        self._tagnum += 1
        tag = f"Y{self._tagnum}"
        parts = encode_command(tag, name, *args, nonsync_max=nonsync_max)
        cmd = Command(tag, name, WANTS.get(name, _NOTHING), handler)
        self.pending[tag] = cmd
        for kind in cmd.wants:
            waiting = self._by_kind.get(kind)
            if waiting is None:
                waiting = self._by_kind[kind] = OrderedDict()
            waiting[tag] = cmd
        return cmd, parts

    def expect_continuation(self, command: Command) -> None:
        """``command`` has written up to a synchronizing literal: the next ``+`` is for
        it (until the command completes, e.g. refused before its literal)."""
        self._continuing = command

    def abandon(self) -> list[Command]:
        """The connection is gone: every command still in flight, oldest first; the
        table is empty afterwards."""
        out = list(self.pending.values())
        self.pending.clear()
        self._by_kind.clear()
        self._continuing = None
        return out

    def restart_stream(self) -> None:
        """Forget anything received but not yet a whole response (STARTTLS: RFC 3501
        6.2.1 / RFC 2595, nothing sent before TLS may be read after it)."""
        self._parser = ResponseParser(bulk=True)

    # ------------------------------------------------------------------ receiving

    def receive_data(self, data: bytes | memoryview) -> list[Event]:
        """The events ``data`` completes (handlers of commands are called meanwhile)."""
        if self._broken:
            return []
        try:
            responses = self._parser.feed(data)
        except ProtocolError as exc:
            return [self._break(f"sent invalid IMAP data: {exc}", exc)]
        events: list[Event] = []
        for r in responses:
            if isinstance(r, FetchRun):
                self._route_run(r, events)
            elif isinstance(r, Untagged):
                self._route(r, events)
            elif isinstance(r, Tagged):
                cmd = self.pending.pop(r.tag, None)
                if cmd is None:
                    events.append(self._break(f"answered an unknown tag {r.tag!r}"))
                    break
                by_kind = self._by_kind
                for kind in cmd.wants:
                    del by_kind[kind][cmd.tag]
                if self._continuing is cmd:
                    self._continuing = None
                events.append(Completed(cmd, CommandResult(r, cmd.untagged)))
            else:
                assert isinstance(r, Continuation)
                if self._continuing is None:
                    events.append(self._break("sent an unexpected continuation"))
                    break
                self._continuing = None
                events.append(ContinuationRequest(r.text))
        return events

    def _break(self, reason: str, error: ProtocolError | None = None) -> Broken:
        self._broken = True
        return Broken(reason, error)

    def _route(self, r: Untagged, events: list[Event]) -> None:
        if not self._greeted:
            self._greeted = True
            events.append(Greeting(r))
            return
        kind = r.kind
        if kind == "BYE":
            events.append(Bye(r))
            return
        waiting = self._by_kind.get(kind)
        if not waiting:
            events.append(Unsolicited(r))
            return
        cmd = next(iter(waiting.values()))
        handler = cmd.handler
        if handler is None:
            cmd.untagged.append(r)
            return
        try:
            handler(r)
        except Exception as exc:  # e.g. ProtocolError: a FETCH without a UID
            # The command fails with it (not retried: the server would say the same
            # again); the connection stays in step.
            if cmd.error is None:
                cmd.error = exc
                events.append(HandlerFailed(cmd, exc))

    def _route_run(self, run: FetchRun, events: list[Event]) -> None:
        """A run of FETCH responses goes where each of them would go (the oldest command
        that collects FETCH); a handler with an ``on_run`` method takes it whole."""
        waiting = self._by_kind.get("FETCH") if self._greeted else None
        if waiting:
            cmd = next(iter(waiting.values()))
            bulk = getattr(cmd.handler, "on_run", None)
            if bulk is not None:
                try:
                    bulk(run)
                except Exception as exc:  # as in _route
                    if cmd.error is None:
                        cmd.error = exc
                        events.append(HandlerFailed(cmd, exc))
                return
        for u in run.untagged():
            self._route(u, events)
