"""A folder name the destination refuses keeps what the server takes (issue 13, item 4)."""

from __future__ import annotations

import asyncio

from tests.transfer.memstore import MemoryServer, MemoryStore, Message, _no
from yippiemove.imap import utf7
from yippiemove.imap.connection import CommandResult
from yippiemove.imap.errors import CommandError
from yippiemove.transfer.destination import narrowed_names
from yippiemove.transfer.engine import Mover
from yippiemove.transfer.model import Endpoint, Options

DATE = b"01-Jan-2020 10:00:00 +0000"
NAME = "\u00dcn\u00efc\u00f6d\u00e9 \U0001f389"  # Ünïcödé 🎉


def test_narrowing_replaces_the_most_often_refused_first() -> None:
    assert narrowed_names(NAME, "/") == [
        ("\u00dcn\u00efc\u00f6d\u00e9 _", "\U0001f389"),
        ("_n_c_d_ _", "\u00dc\u00ef\u00f6\u00e9\U0001f389"),
    ]
    assert narrowed_names("Wow!", ".") == [("Wow_", "!")]
    steps = narrowed_names("a/b&c \u2603 e\u0301\U0001f389x", "/")
    assert [alt for alt, _ in steps] == [
        "a/b&c \u2603 e\u0301_x",  # outside the BMP
        "a/b&c _ e\u0301_x",  # other non-ASCII symbols (a combining mark is no symbol)
        "a/b_c _ e\u0301_x",  # ASCII specials
        "a/b_c _ e__x",  # every non-ASCII character
    ]
    assert all("/" in alt for alt, _ in steps)  # the hierarchy is kept
    assert narrowed_names("plain", "/") == []


def test_bounded_whatever_the_length() -> None:
    long = "".join(chr(c) for c in range(0x20, 0x3000, 7)) + "\U0001f389" * 500
    assert len(narrowed_names(long, "/")) <= 4


class Refusing(MemoryStore):
    """A destination that refuses names holding one of ``refused`` (NO [CANNOT])."""

    refused = "\U0001f389"
    tried: list[str]

    def _bad(self, raw: bytes) -> bool:
        name = utf7.decode(raw)
        self.tried.append(name)
        return any(c in name for c in self.refused)

    async def create(self, raw: bytes) -> None:
        if self._bad(raw):
            raise CommandError("CREATE", _no("CANNOT", b"Invalid mailbox name"))
        await super().create(raw)

    async def submit_create(self, raw_name: bytes, special_use: str | None = None):  # type: ignore[no-untyped-def]
        if self._bad(raw_name):
            fut: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
            fut.set_result(CommandResult(_no("CANNOT", b"Invalid mailbox name")))
            return fut
        return await super().submit_create(raw_name, special_use)


def _run(refused: str) -> tuple[MemoryServer, Mover, list[str]]:
    s = MemoryServer()
    src = s.account("alice")
    src.folders[NAME] = box = type(src.folders["INBOX"])()
    box.add(Message(b"Message-ID: <a@b>\r\n\r\nx\r\n", (), DATE))
    s.account("bob")
    tried: list[str] = []

    async def factory(ep: Endpoint, role: str, on_open):  # type: ignore[no-untyped-def]
        on_open()
        st = (Refusing if role == "destination" else MemoryStore)(s.account(ep.user))
        st.read_only = role == "source"
        if isinstance(st, Refusing):
            st.refused, st.tried = refused, tried
        return st

    events: list[str] = []
    mover = Mover(
        Endpoint("mem", 1, "alice"), Endpoint("mem", 2, "bob"), options=Options(),
        stores=factory, on_event=events.append,
    )  # fmt: skip
    asyncio.run(mover.run())
    return s, mover, tried + events


def test_only_the_refused_emoji_is_replaced() -> None:
    s, mover, log = _run("\U0001f389")
    names = {utf7.decode(n.encode()) for n in s.account("bob").folders}
    assert names == {"INBOX", "\u00dcn\u00efc\u00f6d\u00e9 _"}, names
    res = next(r for r in mover.results if r.source == NAME)
    assert res.dest == "\u00dcn\u00efc\u00f6d\u00e9 _" and res.copied == 1
    plan_fp = next(f for f in mover.plan.folders if f.source.name == NAME)
    assert any("'\U0001f389' replaced by '_'" in r for r in plan_fp.reasons), plan_fp.reasons
    assert any("replaced by '_'" in e for e in log)


def test_a_server_refusing_letters_too_gets_the_narrower_name() -> None:
    s, _mover, log = _run("\U0001f389\u00ef")
    names = {utf7.decode(n.encode()) for n in s.account("bob").folders}
    assert names == {"INBOX", "_n_c_d_ _"}, names
    tries = [t for t in log if not t.startswith("INBOX") and " " in t and "\n" not in t]
    assert tries[:3] == [NAME, "\u00dcn\u00efc\u00f6d\u00e9 _", "_n_c_d_ _"]
