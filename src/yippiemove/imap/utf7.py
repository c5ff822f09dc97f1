"""Modified UTF-7 mailbox-name codec (RFC 3501 section 5.1.3), written by hand.

Encoding rules:

* printable US-ASCII 0x20-0x7e except ``&`` represents itself;
* ``&`` is written ``&-``;
* every other run of characters is written ``&`` + modified BASE64 of its
  UTF-16BE form + ``-``.  Modified BASE64 is RFC 4648 base64 with ``,``
  instead of ``/`` and no ``=`` padding.  Characters outside the BMP are
  written as UTF-16 surrogate pairs.

The canonical form is unique, and ``decode`` (strict) accepts only that form:
no base64-encoded printable ASCII, no adjacent shifted runs ("null shifts"
``-&``), no non-zero pad bits, and the name must end in US-ASCII.  So for
every ``raw`` that strict ``decode`` accepts, ``encode(decode(raw)) == raw``.

``decode(raw, strict=False)`` never raises, because servers in the wild send
names that are not valid modified UTF-7.  It returns, in this order:

1. the strict decoding, if ``raw`` is valid;
2. ``raw`` decoded as UTF-8, if it has bytes >= 0x80 and is valid UTF-8 (a
   server sending raw UTF-8 names);
3. ``raw`` decoded as Latin-1, if it has bytes >= 0x80 and is not UTF-8 (a
   legacy 8-bit server; the bytes can be recovered exactly with
   ``str.encode("latin-1")``);
4. for 7-bit input, a relaxed decoding: shifted runs that are well-formed
   UTF-16 are decoded even when not canonical; a malformed ``&`` is taken
   literally; control characters pass through.

A lenient result can be re-encoded with ``encode`` for the destination, but
the source mailbox must still be addressed with the original bytes.

RFC 6855 section 3: a server that advertises UTF8=ACCEPT (once the client has
sent ``ENABLE UTF8=ACCEPT``) takes and returns mailbox names as raw UTF-8
instead of modified UTF-7.  yippiemove uses modified UTF-7 unless told
otherwise; callers that negotiated UTF8=ACCEPT should encode names with
``str.encode("utf-8")`` instead of this module.
"""

__all__ = ["Utf7Error", "decode", "encode"]

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,"
_VALUE: dict[int, int] = {byte: index for index, byte in enumerate(_ALPHABET)}
_AMP = 0x26
_DASH = 0x2D


class Utf7Error(ValueError):
    """Invalid modified UTF-7 (RFC 3501 section 5.1.3), or an unencodable name.

    ``raw`` is the offending input, ``offset`` the index of the problem in it
    (or ``None``).
    """

    def __init__(self, message: str, raw: bytes | str, offset: int | None = None) -> None:
        self.raw = raw
        self.offset = offset
        where = "" if offset is None else f" at offset {offset}"
        super().__init__(f"{message}{where} in {raw!r}")


def _is_printable(code: int) -> bool:
    return 0x20 <= code <= 0x7E


def _b64(data: bytes) -> bytes:
    """Modified BASE64 (RFC 3501 section 5.1.3): "," for "/", no padding."""
    out = bytearray()
    bits = 0
    nbits = 0
    for byte in data:
        bits = (bits << 8) | byte
        nbits += 8
        while nbits >= 6:
            nbits -= 6
            out.append(_ALPHABET[(bits >> nbits) & 0x3F])
        bits &= (1 << nbits) - 1
    if nbits:
        out.append(_ALPHABET[(bits << (6 - nbits)) & 0x3F])
    return bytes(out)


def _encode_run(run: str) -> bytes:
    return b"&" + _b64(run.encode("utf-16-be")) + b"-"


def encode(name: str) -> bytes:
    """Encode a mailbox name to modified UTF-7 (RFC 3501 section 5.1.3).

    Raises ``Utf7Error`` for lone surrogates, which UTF-16 cannot carry.
    """
    out = bytearray()
    run_start: int | None = None
    for index, char in enumerate(name):
        code = ord(char)
        if _is_printable(code):
            if run_start is not None:
                out += _encode_run(name[run_start:index])
                run_start = None
            out += b"&-" if code == _AMP else bytes((code,))
            continue
        if 0xD800 <= code <= 0xDFFF:
            raise Utf7Error(f"lone surrogate U+{code:04X} cannot be encoded", name, index)
        if run_start is None:
            run_start = index
    if run_start is not None:
        out += _encode_run(name[run_start:])
    return bytes(out)


def _decode_run(raw: bytes, start: int, end: int, *, strict: bool) -> str:
    """Decode the modified BASE64 in ``raw[start:end]`` (between "&" and "-")."""
    data = bytearray()
    bits = 0
    nbits = 0
    for pos in range(start, end):
        bits = (bits << 6) | _VALUE[raw[pos]]
        nbits += 6
        if nbits >= 8:
            nbits -= 8
            data.append((bits >> nbits) & 0xFF)
            bits &= (1 << nbits) - 1
    if nbits >= 6:
        raise Utf7Error("incomplete base64 group (one base64 char too many)", raw, end - 1)
    if strict and bits:
        raise Utf7Error("non-zero leftover bits at end of base64 run", raw, end - 1)
    if len(data) % 2:
        raise Utf7Error("odd number of bytes in base64 run (not UTF-16)", raw, start)
    chars: list[str] = []
    index = 0
    while index < len(data):
        unit = (data[index] << 8) | data[index + 1]
        index += 2
        if 0xDC00 <= unit <= 0xDFFF:
            raise Utf7Error(f"unpaired low surrogate U+{unit:04X}", raw, start)
        if 0xD800 <= unit <= 0xDBFF:
            low = (data[index] << 8) | data[index + 1] if index < len(data) else None
            if low is None or not 0xDC00 <= low <= 0xDFFF:
                raise Utf7Error(f"unpaired high surrogate U+{unit:04X}", raw, start)
            index += 2
            unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
        if strict and _is_printable(unit):
            raise Utf7Error(
                f"printable ASCII {chr(unit)!r} must represent itself, not be base64-encoded",
                raw,
                start,
            )
        chars.append(chr(unit))
    return "".join(chars)


def _decode_7bit(raw: bytes, *, strict: bool) -> str:
    out: list[str] = []
    index = 0
    last_run_end = -1  # index just past the "-" of the last base64 run
    while index < len(raw):
        byte = raw[index]
        if byte != _AMP:
            if not (_is_printable(byte) or (not strict and byte < 0x80)):
                raise Utf7Error(f"byte 0x{byte:02x} must be modified-BASE64 encoded", raw, index)
            out.append(chr(byte))
            index += 1
            continue
        end = index + 1
        while end < len(raw) and raw[end] in _VALUE:
            end += 1
        try:
            if end >= len(raw):
                raise Utf7Error("unterminated '&' shift (missing '-')", raw, index)
            if raw[end] != _DASH:
                raise Utf7Error(f"invalid base64 character {chr(raw[end])!r}", raw, end)
            if end == index + 1:
                out.append("&")
            else:
                if strict and last_run_end == index:
                    raise Utf7Error("adjacent base64 runs (null shift '-&')", raw, index)
                out.append(_decode_run(raw, index + 1, end, strict=strict))
                last_run_end = end + 1
        except Utf7Error:
            if strict:
                raise
            out.append("&")  # relaxed: take the malformed "&" literally
            index += 1
            continue
        index = end + 1
    return "".join(out)


def decode(raw: bytes, *, strict: bool = True) -> str:
    """Decode a modified UTF-7 mailbox name (RFC 3501 section 5.1.3).

    Strict (default): raise ``Utf7Error`` unless ``raw`` is canonical modified
    UTF-7.  ``strict=False``: never raise; see the module docstring for the
    fallbacks (raw UTF-8 per RFC 6855, Latin-1, relaxed decoding).
    """
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise TypeError(f"decode() expects bytes, not {type(raw).__name__}")
    raw = bytes(raw)
    if strict:
        for index, byte in enumerate(raw):
            if byte >= 0x80:
                raise Utf7Error(
                    f"8-bit byte 0x{byte:02x} (raw UTF-8 or other charset?)", raw, index
                )
        return _decode_7bit(raw, strict=True)
    try:
        return decode(raw, strict=True)
    except Utf7Error:
        pass
    if any(byte >= 0x80 for byte in raw):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")
    return _decode_7bit(raw, strict=False)
