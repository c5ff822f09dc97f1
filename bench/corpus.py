"""Deterministic, realistic mail corpora for the benchmark.

Every message is built from its own ``random.Random`` seeded with
``"{seed}/{preset}/{index}"`` (string seeds are hashed with SHA-512, so the corpus is
the same on every machine and Python 3.11+), which lets the generator stream messages
folder by folder straight into :meth:`DovecotServer.deliver_many` without holding the
corpus in memory.

What a message looks like: Return-Path, Delivered-To, two to four ``Received`` lines,
a DKIM-Signature, Date, From/To/Cc with RFC 2047 encoded-word display names (some
non-ASCII: "Jürgen Müller", "Łukasz Wąsik", "田中 太郎" ...), an encoded Subject,
Message-ID, In-Reply-To/References on replies, List-Id on list folders, a User-Agent,
then either ``text/plain`` (quoted-printable UTF-8), ``multipart/alternative``
(plain + HTML) or ``multipart/mixed`` with base64 attachments whose file names are
RFC 2231/2047 encoded.  Attachment bytes are random (incompressible, like JPEG or PDF).
Lines end in LF, as Dovecot itself stores mail (it serves them as CRLF).

Flags and keywords are drawn per folder (``\\Seen`` mostly, ``\\Answered``,
``\\Flagged``, ``\\Draft`` in Drafts, a few ``\\Deleted``; ``$Forwarded``, ``$Junk``,
``$label1`` ...), INTERNALDATEs rise through the folder over 2012-2024, and about 0.5%
of the messages are exact duplicates (bytes, flags, date) of the message before them,
so the exactness check also covers multiplicity.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

from yippiemove.testing.dovecot import DovecotServer, MaildirMessage

__all__ = ["PRESETS", "CorpusStats", "Preset", "generate", "load"]

SEED = 20240611

# Folder name -> share of the messages.  "/" is the server's separator; the nested
# and non-ASCII names exercise folder creation and modified UTF-7 on every mover.
FOLDERS: tuple[tuple[str, float], ...] = (
    ("INBOX", 0.24),
    ("Sent", 0.12),
    ("Drafts", 0.01),
    ("Trash", 0.04),
    ("Junk", 0.04),
    ("Archive", 0.05),
    ("Archive/2019", 0.08),
    ("Archive/2020", 0.08),
    ("Archive/2021", 0.08),
    ("Projects", 0.02),
    ("Projects/Alpha", 0.06),
    ("Projects/Beta", 0.05),
    ("Lists/python-dev", 0.09),
    ("Données clients", 0.03),
    ("Données clients/Été 2023", 0.01),
)


@dataclass(frozen=True)
class Preset:
    """Shape of one corpus."""

    name: str
    messages: int
    #: median of the text part's size in bytes (log-normal)
    text_median: int
    #: share of messages with a large attachment, and its encoded size range in bytes
    big_share: float
    big_min: int
    big_max: int
    #: share of messages with one or two small (2-60 kB) attachments
    small_attach_share: float
    folders: tuple[tuple[str, float], ...] = FOLDERS


PRESETS: dict[str, Preset] = {
    # ~20,000 messages of a few kB each, ~150 MB
    "small": Preset("small", 20_000, 1_600, 0.0, 0, 0, 0.06),
    # ~3,000 messages, ~430 MB; 5% carry 0.1-5 MB attachments
    "mixed": Preset("mixed", 3_000, 5_000, 0.05, 100_000, 5_000_000, 0.12),
    # ~2,000 messages of the "small" shape: the --no-literal-plus bench (issue 13)
    "small-2k": Preset("small-2k", 2_000, 1_600, 0.0, 0, 0, 0.06),
    # --quick: the same shapes, tiny
    "small-quick": Preset("small-quick", 800, 1_600, 0.0, 0, 0, 0.06),
    "small-2k-quick": Preset("small-2k-quick", 300, 1_600, 0.0, 0, 0, 0.06),
    "mixed-quick": Preset("mixed-quick", 120, 5_000, 0.05, 100_000, 1_500_000, 0.12),
}


@dataclass
class CorpusStats:
    """What was generated (sizes as stored, i.e. with LF line endings)."""

    preset: str
    seed: int
    messages: int = 0
    stored_bytes: int = 0
    largest: int = 0
    duplicates: int = 0
    with_big_attachment: int = 0
    keywords: set[str] = field(default_factory=set)
    folders: dict[str, int] = field(default_factory=dict)
    sha256: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "preset": self.preset,
            "seed": self.seed,
            "messages": self.messages,
            "stored_bytes": self.stored_bytes,
            "largest_message_bytes": self.largest,
            "duplicates": self.duplicates,
            "with_big_attachment": self.with_big_attachment,
            "keywords": sorted(self.keywords),
            "folders": dict(self.folders),
            "sha256": self.sha256,
        }


# --------------------------------------------------------------------------- vocabulary

_PEOPLE: tuple[tuple[str, str], ...] = (
    ("Jürgen Müller", "juergen.mueller@example.de"),
    ("Zoë Dubois", "zoe.dubois@example.fr"),
    ("François Lefèvre", "f.lefevre@example.fr"),
    ("Łukasz Wąsik", "lukasz@example.pl"),
    ("Søren Kierkegård", "soren@example.dk"),
    ("José Núñez", "jose.nunez@example.es"),
    ("Björk Guðmundsdóttir", "bjork@example.is"),
    ("田中 太郎", "tanaka@example.jp"),
    ("Иван Петров", "ivan.petrov@example.ru"),
    ("Ana María Ortega", "ana.ortega@example.mx"),
    ("Alice Johnson", "alice@example.com"),
    ("Bob Smith", "bob.smith@example.org"),
    ("Carol White", "carol@example.net"),
    ("Dave Brown", "dave@example.com"),
    ("Eve Black", "eve@example.org"),
    ("Frank Green", "frank.green@example.co.uk"),
    ("Grace Hopper", "grace@example.edu"),
    ("Heidi Klum", "heidi@example.de"),
    ("Ivan Ivanov", "ivan@example.com"),
    ("Judy Garland", "judy@example.com"),
    ("Mallory Evans", "mallory@example.net"),
    ("Niaj Patel", "niaj@example.in"),
)
_ME = ("Pat Example", "pat@example.com")

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when "
    "if so no will can more other its into some could them than then these two may first "
    "only new also any time after over our such where most must between through years "
    "meeting project report budget invoice schedule review release server migration "
    "mailbox folder message attachment deadline quarter customer contract proposal draft "
    "please thanks regards update question agenda notes minutes follow-up appointment "
    "Python Dovecot IMAP performance benchmark throughput latency connection pipeline"
).split()
_WORDS_INTL = (
    "Grüße Änderung Übersicht straße Besprechung réunion déjà vu à propos été "
    "café naïve façade mañana año niño señor cumpleaños smørrebrød Łódź zażółć "
    "спасибо привет встреча 会議 資料 ありがとう"
).split()
_SUBJECTS = (
    "Quarterly report",
    "Meeting tomorrow",
    "Invoice {n}",
    "Re: project status",
    "Your order #{n} has shipped",
    "Agenda for Monday",
    "Budget {n} review",
    "Holiday photos",
    "Fwd: contract draft",
    "Release {n} notes",
    "Migration plan",
    "Réunion de lundi",
    "Besprechung am Freitag – Änderungen",
    "Résumé et déjà-vu",
    "会議の資料",
    "Приглашение на встречу",
    "Cumpleaños de Ana",
)
_ATTACHMENTS: tuple[tuple[str, str], ...] = (
    ("application/pdf", "Rechnung Nr. {n} – März.pdf"),
    ("application/pdf", "report-{n}.pdf"),
    ("image/jpeg", "IMG_{n}.jpg"),
    ("image/png", "screenshot {n}.png"),
    ("application/zip", "Données-{n}.zip"),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "budget-{n}.xlsx"),
    ("application/octet-stream", "backup-{n}.bin"),
)
_LISTS = ("python-dev.python.org", "dovecot.dovecot.org", "announce.example.org")
_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.6.0",
    "Apple Mail (2.3731.700.6)",
    "Microsoft Outlook 16.0",
    "Roundcube Webmail/1.6.5",
    "Mutt/2.2.9 (2022-11-12)",
    "K-9 Mail for Android",
)
_TZS = (0, 60, 120, -300, -420, 330, 540, -180)


def _sentence_pool(rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        k = rng.randint(6, 18)
        words = [
            rng.choice(_WORDS_INTL) if rng.random() < 0.06 else rng.choice(_WORDS) for _ in range(k)
        ]
        out.append(" ".join(words).capitalize() + rng.choice((".", ".", ".", "?", "!")))
    return out


def _line_pool(rng: random.Random, n: int) -> list[str]:
    """Lines of 40-76 characters, cut at word boundaries from running text."""
    sentences = _sentence_pool(rng, 4000)
    lines: list[str] = []
    cur = ""
    while len(lines) < n:
        for word in rng.choice(sentences).split():
            if cur and len(cur) + 1 + len(word) > rng.randint(40, 76):
                lines.append(cur)
                cur = word
            else:
                cur = f"{cur} {word}" if cur else word
    return lines


_POOL_RNG = random.Random(f"{SEED}/pool")
_LINES = _line_pool(_POOL_RNG, 20_000)


# --------------------------------------------------------------------------- encoding


def _encoded_word(text: str, rng: random.Random) -> str:
    """RFC 2047 encoded word(s) for non-ASCII text; ASCII stays as it is."""
    if text.isascii():
        return text
    data = text.encode()
    if rng.random() < 0.5:
        # B encoding, split at character boundaries so every word stays < 76 chars
        out, pos = [], 0
        while pos < len(data):
            end = min(pos + 36, len(data))
            while end < len(data) and (data[end] & 0xC0) == 0x80:
                end -= 1
            out.append("=?UTF-8?B?" + base64.b64encode(data[pos:end]).decode() + "?=")
            pos = end
        return "\n ".join(out)
    q = []
    for b in data:
        c = chr(b)
        if b == 0x20:
            q.append("_")
        elif c.isascii() and c.isalnum():
            q.append(c)
        else:
            q.append(f"={b:02X}")
    return "=?UTF-8?Q?" + "".join(q) + "?="


def _address(name: str, email: str, rng: random.Random) -> str:
    enc = _encoded_word(name, rng)
    if enc == name:
        return f'"{name}" <{email}>' if rng.random() < 0.3 else f"{name} <{email}>"
    return f"{enc} <{email}>"


def _rfc2822_date(when: datetime) -> str:
    offset = int((when.utcoffset() or timedelta(0)).total_seconds()) // 60
    sign, off = ("-", -offset) if offset < 0 else ("+", offset)
    return when.strftime("%a, %d %b %Y %H:%M:%S ") + f"{sign}{off // 60:02d}{off % 60:02d}"


def _qp(text: str) -> bytes:
    """Quoted-printable body with LF line ends (binascii.b2a_qp is C code)."""
    return binascii.b2a_qp(text.encode(), istext=True)


def _b64_lines(data: bytes) -> bytes:
    """base64 in 76-character lines, LF line ends."""
    return base64.encodebytes(data)


def _text_body(rng: random.Random, size: int) -> list[str]:
    """Paragraphs of lines, about ``size`` characters in all."""
    lines: list[str] = []
    total = 0
    while total < size:
        para = rng.choices(_LINES, k=rng.randint(2, 8))
        lines.extend(para)
        lines.append("")
        total += sum(len(x) + 1 for x in para) + 1
    return lines


# --------------------------------------------------------------------------- one message


def _flags(folder: str, rng: random.Random) -> tuple[str, ...]:
    flags: list[str] = []
    top = folder.split("/")[0]
    if top == "Drafts":
        flags += ["\\Draft"]
        if rng.random() < 0.5:
            flags.append("\\Seen")
        return tuple(flags)
    if top == "Sent":
        flags.append("\\Seen")
        if rng.random() < 0.03:
            flags.append("$MDNSent")
        return tuple(flags)
    seen = 0.55 if top == "INBOX" else 0.93
    if rng.random() < seen:
        flags.append("\\Seen")
    if rng.random() < 0.10:
        flags.append("\\Answered")
    if rng.random() < 0.05:
        flags.append("\\Flagged")
    if rng.random() < 0.01:
        flags.append("\\Deleted")
    if top == "Junk":
        flags.append("$Junk")
    elif rng.random() < 0.3:
        flags.append(rng.choice(("$NotJunk", "NonJunk")))
    if rng.random() < 0.04:
        flags.append("$Forwarded")
    if rng.random() < 0.06:
        flags.append(rng.choice(("$label1", "$label2", "$label3", "$label4", "$label5")))
    if rng.random() < 0.03:
        flags.append(rng.choice(("Work", "Personal", "ToDo")))
    return tuple(flags)


def _message(
    preset: Preset, folder: str, index: int, when: datetime, rng: random.Random
) -> tuple[bytes, bool]:
    """One message (LF line ends); True if it carries a big attachment."""
    sent_folder = folder.split("/")[0] in ("Sent", "Drafts")
    sender = _ME if sent_folder else rng.choice(_PEOPLE)
    rcpts = [rng.choice(_PEOPLE) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
    if not sent_folder:
        rcpts[0] = _ME
    tz = timezone(timedelta(minutes=rng.choice(_TZS)))
    date = (when - timedelta(seconds=rng.randint(2, 900))).astimezone(tz)
    host = sender[1].split("@")[1]
    mid = f"<{index:07d}.{rng.getrandbits(48):012x}@{host}>"
    subject = rng.choice(_SUBJECTS).format(n=rng.randint(100, 99999))

    h: list[str] = [
        f"Return-Path: <{sender[1]}>",
        f"Delivered-To: {_ME[1]}",
    ]
    for hop in range(rng.randint(2, 4)):
        ip = f"198.51.100.{rng.randint(1, 254)}"
        rdate = _rfc2822_date(date + timedelta(seconds=hop * rng.randint(1, 30)))
        h.append(
            f"Received: from mx{hop}.{host} (mx{hop}.{host} [{ip}])\n"
            f"\tby mail.example.com (Postfix) with ESMTPS id {rng.getrandbits(40):010X}\n"
            f"\tfor <{_ME[1]}>; {rdate}"
        )
    bh = base64.b64encode(rng.randbytes(32)).decode()
    sig = base64.b64encode(rng.randbytes(256)).decode()
    h.append(
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={host}; s=sel{rng.randint(1, 9)};\n"
        f"\th=From:To:Subject:Date:Message-ID; bh={bh};\n"
        "\tb=" + "\n\t  ".join(sig[i : i + 72] for i in range(0, len(sig), 72))
    )
    h.append(f"Date: {_rfc2822_date(date)}")
    h.append(f"From: {_address(*sender, rng)}")
    h.append("To: " + ",\n\t".join(_address(n, e, rng) for n, e in rcpts))
    if rng.random() < 0.2:
        cc = rng.choice(_PEOPLE)
        h.append(f"Cc: {_address(*cc, rng)}")
    h.append(f"Subject: {_encoded_word(subject, rng)}")
    h.append(f"Message-ID: {mid}")
    if subject.startswith("Re:") or rng.random() < 0.2:
        ref = f"<{rng.getrandbits(64):016x}@{rng.choice(_PEOPLE)[1].split('@')[1]}>"
        h.append(f"In-Reply-To: {ref}")
        h.append(f"References: {ref}")
    if folder.startswith("Lists/"):
        lst = rng.choice(_LISTS)
        h.append(f"List-Id: <{lst}>")
        h.append(f"List-Unsubscribe: <mailto:{lst.split('.')[0]}-leave@{lst}>")
    h.append(f"User-Agent: {rng.choice(_AGENTS)}")
    h.append("MIME-Version: 1.0")

    text_size = int(min(200_000, max(200, rng.lognormvariate(0, 0.8) * preset.text_median)))
    lines = _text_body(rng, text_size)
    plain = _qp("\n".join(lines) + "\n")
    big = preset.big_share > 0 and rng.random() < preset.big_share
    n_small = 0
    if rng.random() < preset.small_attach_share:
        n_small = rng.choice((1, 1, 2))
    boundary = f"----=_Part_{rng.getrandbits(64):016x}"

    if not big and not n_small and rng.random() < 0.45:
        h.append("Content-Type: text/plain; charset=UTF-8; format=flowed")
        h.append("Content-Transfer-Encoding: quoted-printable")
        return ("\n".join(h) + "\n\n").encode() + plain, False

    alt_boundary = f"----=_Alt_{rng.getrandbits(64):016x}"
    html = (
        "<html><body>\n"
        + "".join(f"<p>{line}</p>\n" if line else "<br>\n" for line in lines[: len(lines) // 2])
        + "</body></html>\n"
    )
    alternative = (
        (
            f"--{alt_boundary}\n"
            "Content-Type: text/plain; charset=UTF-8\n"
            "Content-Transfer-Encoding: quoted-printable\n\n"
        ).encode()
        + plain
        + (
            f"\n--{alt_boundary}\n"
            "Content-Type: text/html; charset=UTF-8\n"
            "Content-Transfer-Encoding: quoted-printable\n\n"
        ).encode()
        + _qp(html)
        + f"\n--{alt_boundary}--\n".encode()
    )

    if not big and not n_small:
        h.append(f'Content-Type: multipart/alternative; boundary="{alt_boundary}"')
        return ("\n".join(h) + "\n\n").encode() + alternative, False

    h.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
    parts = [
        b"This is a multi-part message in MIME format.\n",
        f'--{boundary}\nContent-Type: multipart/alternative; boundary="{alt_boundary}"\n\n'.encode()
        + alternative,
    ]
    sizes = [rng.randint(2_000, 60_000) * 3 // 4 for _ in range(n_small)]
    if big:
        sizes.append(rng.randint(preset.big_min, preset.big_max) * 3 // 4)
    for raw_size in sizes:
        ctype, fname = rng.choice(_ATTACHMENTS)
        fname = fname.format(n=rng.randint(1, 9999))
        if fname.isascii():
            disp = f'attachment; filename="{fname}"'
            name_param = f'name="{fname}"'
        else:
            disp = f"attachment;\n\tfilename*=UTF-8''{quote(fname)}"
            name_param = f'name="{_encoded_word(fname, rng)}"'
        parts.append(
            f"--{boundary}\nContent-Type: {ctype};\n\t{name_param}\n"
            f"Content-Disposition: {disp}\n"
            "Content-Transfer-Encoding: base64\n\n".encode()
            + _b64_lines(rng.randbytes(raw_size))
        )
    parts.append(f"--{boundary}--\n".encode())
    return ("\n".join(h) + "\n\n").encode() + b"\n".join(parts), big


# --------------------------------------------------------------------------- corpus


def _folder_counts(preset: Preset) -> list[tuple[str, int]]:
    total_w = sum(w for _, w in preset.folders)
    counts = [(name, max(1, round(preset.messages * w / total_w))) for name, w in preset.folders]
    diff = preset.messages - sum(c for _, c in counts)
    name0, c0 = counts[0]
    counts[0] = (name0, c0 + diff)
    return counts


def generate(
    preset: Preset, seed: int = SEED, stats: CorpusStats | None = None
) -> Iterator[tuple[str, Iterator[MaildirMessage]]]:
    """Yield (folder, messages) per folder; messages are produced lazily."""
    stats = stats if stats is not None else CorpusStats(preset.name, seed)
    digest = hashlib.sha256()
    start = datetime(2012, 1, 1, tzinfo=UTC).timestamp()
    span = datetime(2024, 12, 31, tzinfo=UTC).timestamp() - start
    index = 0
    counts = _folder_counts(preset)
    for f_no, (folder, count) in enumerate(counts):
        base = index

        def folder_messages(
            folder: str = folder,
            count: int = count,
            base: int = base,
            last: bool = f_no == len(counts) - 1,
        ) -> Iterator[MaildirMessage]:
            frng = random.Random(f"{seed}/{preset.name}/folder/{folder}")
            stamps = sorted(start + frng.random() * span for _ in range(count))
            prev: MaildirMessage | None = None
            for k in range(count):
                i = base + k
                rng = random.Random(f"{seed}/{preset.name}/{i}")
                if prev is not None and rng.random() < 0.005:
                    msg = prev  # an exact duplicate: same bytes, flags and date
                    stats.duplicates += 1
                    big = False
                else:
                    when = datetime.fromtimestamp(int(stamps[k]), UTC)
                    raw, big = _message(preset, folder, i, when, rng)
                    msg = MaildirMessage(raw, _flags(folder, rng), when)
                prev = msg
                stats.messages += 1
                stats.stored_bytes += len(msg.raw)
                stats.largest = max(stats.largest, len(msg.raw))
                stats.with_big_attachment += big
                stats.keywords.update(f for f in msg.flags if not f.startswith("\\"))
                stats.folders[folder] = stats.folders.get(folder, 0) + 1
                digest.update(folder.encode() + b"\0" + " ".join(msg.flags).encode() + b"\0")
                digest.update(str(msg.internaldate).encode() + b"\0" + msg.raw)
                yield msg
            if last:
                stats.sha256 = digest.hexdigest()

        index += count
        yield folder, folder_messages()


def load(server: DovecotServer, user: str, preset: Preset, seed: int = SEED) -> CorpusStats:
    """Generate the corpus and write it into ``user``'s Maildir (fast: no IMAP)."""
    stats = CorpusStats(preset.name, seed)
    for folder, msgs in generate(preset, seed, stats):
        # in chunks, so that a big folder never sits in memory as a whole
        chunk: list[MaildirMessage] = []
        chunk_bytes = 0
        for m in msgs:
            chunk.append(m)
            chunk_bytes += len(m.raw)
            if chunk_bytes > 64_000_000 or len(chunk) >= 2000:
                server.deliver_many(user, folder, chunk)
                chunk, chunk_bytes = [], 0
        server.deliver_many(user, folder, chunk)
    return stats
