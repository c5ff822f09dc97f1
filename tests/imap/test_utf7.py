"""Tests for the modified UTF-7 codec (RFC 3501 section 5.1.3)."""

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from yippiemove.imap.utf7 import Utf7Error, decode, encode


def oracle_encode(name: str) -> bytes:
    """Independent reference encoder built on the stdlib base64 module."""

    def shift(match: re.Match[str]) -> str:
        run = match.group(0)
        if run == "&":
            return "&-"
        b64 = base64.b64encode(run.encode("utf-16-be")).decode("ascii")
        return "&" + b64.rstrip("=").replace("/", ",") + "-"

    return re.sub(r"&|[^\x20-\x7e]+", shift, name).encode("ascii")


def shift(data: bytes) -> bytes:
    """Wrap arbitrary bytes as a modified-BASE64 run (may be invalid UTF-16)."""
    return b"&" + base64.b64encode(data).rstrip(b"=").replace(b"/", b",") + b"-"


EMOJI = "\N{GRINNING FACE}"  # U+1F600, outside the BMP
EMOJI_UTF16 = b"\xd8\x3d\xde\x00"  # surrogate pair D83D DE00

FIXTURES: list[tuple[bytes, str]] = [
    # RFC 3501 section 5.1.3 example
    (b"~peter/mail/&U,BTFw-/&ZeVnLIqe-", "~peter/mail/台北/日本語"),
    (b"&-", "&"),
    (b"&-&-", "&&"),
    (b"Tom &- Jerry", "Tom & Jerry"),
    (b"Entw&APw-rfe", "Entwürfe"),
    (b"Gesendete Objekte", "Gesendete Objekte"),
    (b"&AMk-l&AOk-ments envoy&AOk-s", "Éléments envoyés"),
    (b"&2D3eAA-", EMOJI),
    (b"&2D3eANg93gA-", EMOJI * 2),
    (b"a&2D3eAA-b&U,A-", f"a{EMOJI}b台"),
    (b"&ZeVnLIqe-", "日本語"),  # consecutive non-ASCII characters: one run
    (b"&AOQ-&-&APY-", "ä&ö"),  # run, ampersand, run
    (b"&AOQA9gD8-", "äöü"),
    (b"&AAk-", "\t"),  # control characters are encoded too
    (b"&AH8-", "\x7f"),
    (b"", ""),
    (b" ~!\"#$%'()*+,-./09:;<=>?@AZ[\\]^_`az{|}", " ~!\"#$%'()*+,-./09:;<=>?@AZ[\\]^_`az{|}"),
]


@pytest.mark.parametrize(("raw", "text"), FIXTURES)
def test_encode_fixture(raw: bytes, text: str) -> None:
    assert encode(text) == raw


@pytest.mark.parametrize(("raw", "text"), FIXTURES)
def test_decode_fixture(raw: bytes, text: str) -> None:
    assert decode(raw) == text
    assert decode(raw, strict=False) == text


@pytest.mark.parametrize(("raw", "text"), FIXTURES)
def test_fixture_agrees_with_oracle(raw: bytes, text: str) -> None:
    assert oracle_encode(text) == raw


def test_emoji_is_a_surrogate_pair() -> None:
    assert EMOJI.encode("utf-16-be") == EMOJI_UTF16
    expected = shift(EMOJI_UTF16)
    assert expected == b"&2D3eAA-"
    assert encode(EMOJI) == expected
    assert decode(expected) == EMOJI


# Any code point except lone surrogates, which UTF-16 cannot carry.
names = st.text(st.characters(exclude_categories=("Cs",)))


@given(names)
def test_round_trip(text: str) -> None:
    raw = encode(text)
    assert all(0x20 <= byte <= 0x7E for byte in raw)
    assert decode(raw) == text
    assert decode(raw, strict=False) == text


@given(names)
def test_encode_matches_oracle(text: str) -> None:
    assert encode(text) == oracle_encode(text)


@given(st.binary())
def test_lenient_never_raises(raw: bytes) -> None:
    assert isinstance(decode(raw, strict=False), str)


# Byte strings made of the interesting characters, so many of them are valid.
near_utf7 = st.one_of(
    st.binary(),
    st.text(alphabet="&-AOQPwD2d3eU,BTFg+9 a\x01\xfc").map(lambda s: s.encode("latin-1")),
)


@given(near_utf7)
def test_strict_accepts_only_canonical(raw: bytes) -> None:
    try:
        text = decode(raw)
    except Utf7Error:
        assert decode(raw, strict=False) is not None
        return
    assert encode(text) == raw
    assert decode(raw, strict=False) == text


MALFORMED: list[tuple[bytes, str]] = [
    (b"&", "unterminated"),
    (b"Entw&APw", "unterminated"),
    (b"&U,BTFw/&ZeVnLIqe-", "invalid base64 character '/'"),
    (b"&AP w-", "invalid base64 character ' '"),
    (b"&AP=-", "invalid base64 character '='"),
    (b"&AOR-", "non-zero leftover bits"),  # "&AOQ-" is the valid "ä"
    (b"&A-", "incomplete base64 group"),
    (b"&AOQAA-", "incomplete base64 group"),
    (b"&AA-", "odd number of bytes"),
    (shift(b"\x00\xe4\x00"), "odd number of bytes"),
    (shift(b"\xd8\x3d"), "unpaired high surrogate"),
    (shift(b"\xd8\x3d\x00\xe4"), "unpaired high surrogate"),
    (shift(b"\xde\x00"), "unpaired low surrogate"),
    (shift(b"\xde\x00\xd8\x3d"), "unpaired low surrogate"),
    (shift(b"\x00A"), "must represent itself"),
    (shift(b"\x00&"), "must represent itself"),
    (b"&AOQ-&APY-", "null shift"),
    ("Entwürfe".encode(), "8-bit byte 0xc3"),
    (b"Entw\xfcrfe", "8-bit byte 0xfc"),
    (b"a\x01b", "byte 0x01"),
    (b"tab\there", "byte 0x09"),
    (b"del\x7f", "byte 0x7f"),
    (b"nul\x00", "byte 0x00"),
]


@pytest.mark.parametrize(("raw", "message"), MALFORMED)
def test_strict_rejects(raw: bytes, message: str) -> None:
    with pytest.raises(Utf7Error, match=re.escape(message)) as excinfo:
        decode(raw)
    assert repr(raw) in str(excinfo.value)
    assert excinfo.value.raw == raw
    assert excinfo.value.offset is not None


def test_utf7error_is_valueerror() -> None:
    assert issubclass(Utf7Error, ValueError)


LENIENT: list[tuple[bytes, str]] = [
    # raw UTF-8, as sent by servers that ignore RFC 3501 (or use RFC 6855)
    ("Entwürfe".encode(), "Entwürfe"),
    (f"Tom & Jerry {EMOJI}".encode(), f"Tom & Jerry {EMOJI}"),
    ("Ü &AOQ-".encode(), "Ü &AOQ-"),  # valid UTF-8 wins: "&AOQ-" is literal text
    # not UTF-8: Latin-1, recoverable byte for byte
    (b"Entw\xfcrfe", "Entwürfe"),
    (b"\xff\xfe", "\xff\xfe"),
    # 7-bit but not canonical: relaxed decoding
    (b"&AOQ-&APY-", "äö"),
    (b"&AEE-", "A"),
    (b"&AOR-", "ä"),
    (b"a\x01b", "a\x01b"),
    # malformed shifts are taken literally, the rest still decodes
    (b"&", "&"),
    (b"Tom & Jerry", "Tom & Jerry"),
    (b"&A-", "&A-"),
    (b"&AA-&AOQ-", "&AA-ä"),
    (shift(b"\xd8\x3d") + b"x", "&2D0-x"),
    (b"50% & more &AOQ-", "50% & more ä"),
]


@pytest.mark.parametrize(("raw", "text"), LENIENT)
def test_lenient(raw: bytes, text: str) -> None:
    assert decode(raw, strict=False) == text


def test_lenient_latin1_is_reversible() -> None:
    raw = b"Entw\xfcrfe \x80\xff"
    assert decode(raw, strict=False).encode("latin-1") == raw


def test_lenient_result_can_be_reencoded() -> None:
    assert encode(decode("Entwürfe".encode(), strict=False)) == b"Entw&APw-rfe"


@pytest.mark.parametrize("text", ["\ud83d", "a\ude00b", "\ud83d\ude00"])
def test_encode_rejects_lone_surrogates(text: str) -> None:
    with pytest.raises(Utf7Error, match="lone surrogate"):
        encode(text)


def test_decode_accepts_bytes_like() -> None:
    assert decode(bytearray(b"Entw&APw-rfe")) == "Entwürfe"
    assert decode(memoryview(b"&-")) == "&"


def test_decode_rejects_str() -> None:
    with pytest.raises(TypeError):
        decode("Entw&APw-rfe")  # type: ignore[arg-type]
