"""A deterministic sample mailbox for the demo and tests: realistic, varied, seeded."""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

FOLDERS = (
    "INBOX",
    "Sent",
    "Drafts",
    "Archive/2019",
    "Archive/2020",
    "Entwürfe",
    "Projects/🚀 Launch",
    "R&D",
)
_FLAGS = (
    (),
    ("\\Seen",),
    ("\\Seen",),
    ("\\Seen", "\\Answered"),
    ("\\Seen", "\\Flagged"),
    ("\\Seen", "$Forwarded"),
    ("\\Seen", "$label1", "Work"),
)
_NAMES = ("Ana Müller", "Björn Ölund", "Chloé Durand", "Dmitri Иванов", "Eve Smith", "李雷")
_WORDS = (
    "quarterly report meeting budget invoice travel draft review launch schedule lunch "
    "contract numbers update notes agenda minutes feedback release plan design"
).split()


@dataclass(frozen=True)
class SampleMessage:
    folder: str
    raw: bytes
    flags: tuple[str, ...]
    internaldate: datetime


def _encoded_word(text: str) -> str:
    if text.isascii():
        return text
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


def _message(rng: random.Random, n: int, when: datetime, attachment: int) -> bytes:
    sender = rng.choice(_NAMES)
    subject = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 6))).capitalize()
    if rng.random() < 0.3:
        subject += " – " + rng.choice(("Überblick", "résumé", "総括", "✓ done"))
    text = "\r\n".join(
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 14)))
        for _ in range(rng.randint(3, 40))
    )
    boundary = f"=_yippie_{n:06d}"
    headers = [
        f"From: {_encoded_word(sender)} <user{n % 97}@example.org>",
        "To: Demo User <demo@example.net>",
        f"Subject: {_encoded_word(subject)}",
        f"Date: {when.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
        f"Message-ID: <{n}.{rng.getrandbits(40):x}@example.org>",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/mixed; boundary="{boundary}"',
    ]
    parts = [
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n"
    ]
    if attachment:
        blob = base64.encodebytes(rng.randbytes(attachment)).replace(b"\n", b"\r\n").decode()
        parts.append(
            f'--{boundary}\r\nContent-Type: application/octet-stream; name="file{n}.bin"\r\n'
            f"Content-Transfer-Encoding: base64\r\n"
            f'Content-Disposition: attachment; filename="file{n}.bin"\r\n\r\n{blob}'
        )
    body = "".join(parts) + f"--{boundary}--\r\n"
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode("utf-8")


def sample_mailbox(messages: int = 2000, *, seed: int = 2009) -> Iterator[SampleMessage]:
    """``messages`` messages over :data:`FOLDERS`; ~3% carry a 50-800 kB attachment."""
    rng = random.Random(seed)
    start = datetime(2015, 1, 1, tzinfo=UTC)
    for n in range(messages):
        folder = FOLDERS[0] if rng.random() < 0.4 else rng.choice(FOLDERS)
        when = start + timedelta(seconds=rng.randrange(0, 11 * 365 * 86400))
        attachment = rng.randrange(50_000, 800_000) if rng.random() < 0.03 else 0
        yield SampleMessage(folder, _message(rng, n, when, attachment), rng.choice(_FLAGS), when)
