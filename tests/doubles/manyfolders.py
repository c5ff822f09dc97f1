"""A tiny scripted IMAP server for issue 14's class 3: one account whose LIST answers
tens of thousands of folders (a hostile or just a very large server), with pipelined
STATUS (``STATUS=SIZE``) so that a check's time is our own work, not 20,000 round trips.

Only what the service's account check uses: CAPABILITY, LOGIN, ID, ENABLE, NAMESPACE,
LIST, LSUB, STATUS, SELECT/EXAMINE, NOOP, LOGOUT (anything else: BAD).  Runs in a
background thread on 127.0.0.1, usable from sync tests.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Sequence

CAPS = b"IMAP4rev1 LITERAL+ STATUS=SIZE SPECIAL-USE NAMESPACE ID"
_STATUS = re.compile(rb'^STATUS (?:"((?:[^"\\]|\\.)*)"|(\S+)) \(([^)]*)\)$', re.I)


class ManyFoldersServer:
    def __init__(self, folders: Sequence[str], user: str = "user", password: str = "pass") -> None:
        self.folders = list(folders)
        self.user, self.password = user, password
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._listing = b"".join(
            b'* LIST (\\HasNoChildren) "/" "' + f.encode() + b'"\r\n' for f in self.folders
        )

    def __enter__(self) -> ManyFoldersServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            loop.close()

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"* OK [CAPABILITY " + CAPS + b"] many folders ready\r\n")
        try:
            while line := await r.readline():
                tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
                verb = rest.split(b" ", 1)[0].upper()
                out = self._answer(verb, rest)
                w.write(out.replace(b"{TAG}", tag))
                await w.drain()
                if verb == b"LOGOUT":
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    def _answer(self, verb: bytes, rest: bytes) -> bytes:
        ok = b"{TAG} OK done\r\n"
        if verb == b"CAPABILITY":
            return b"* CAPABILITY " + CAPS + b"\r\n" + ok
        if verb == b"LOGIN":
            want = f'LOGIN "{self.user}" "{self.password}"'.encode()
            plain = f"LOGIN {self.user} {self.password}".encode()
            if rest in (want, plain):
                return b"{TAG} OK [CAPABILITY " + CAPS + b"] logged in\r\n"
            return b"{TAG} NO [AUTHENTICATIONFAILED] wrong\r\n"
        if verb in (b"NOOP", b"ID", b"ENABLE"):
            return ok
        if verb == b"NAMESPACE":
            return b'* NAMESPACE (("" "/")) NIL NIL\r\n' + ok
        if verb == b"LIST":
            return self._listing + ok
        if verb == b"LSUB":
            return ok
        if verb == b"STATUS":
            m = _STATUS.match(rest)
            if m is None:
                return b"{TAG} BAD what\r\n"
            name = m.group(1) if m.group(1) is not None else m.group(2)
            items = m.group(3).upper().split()
            vals = {b"MESSAGES": b"0", b"SIZE": b"0", b"UIDNEXT": b"1", b"UIDVALIDITY": b"7",
                    b"UNSEEN": b"0"}  # fmt: skip
            if not set(items) <= set(vals):
                return b"{TAG} BAD unknown status item\r\n"
            body = b" ".join(i + b" " + vals[i] for i in items)
            return b'* STATUS "' + name + b'" (' + body + b")\r\n" + ok
        if verb in (b"SELECT", b"EXAMINE"):
            return (
                b"* 0 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\n* OK [UIDNEXT 1] x\r\n"
                b"* FLAGS (\\Seen)\r\n* OK [PERMANENTFLAGS ()] x\r\n{TAG} OK [READ-ONLY] done\r\n"
            )
        if verb == b"LOGOUT":
            return b"* BYE bye\r\n" + ok
        return b"{TAG} BAD unknown command\r\n"
