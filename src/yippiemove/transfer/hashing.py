"""Content hashes of message bytes (docs/design.md "Content hashes").

* :func:`fingerprint` (SHA-256) wherever a *decision* rests on "these are the same
  bytes": the duplicate check, Gmail's one-copy rule, ``--verify-content``.
* :func:`checksum` (XXH3-128) for the state's record of every other copy.

:class:`Hasher` hashes a batch of bodies, the big ones on a helper thread.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from xxhash import xxh3_128_digest

__all__ = ["Hasher", "checksum", "fingerprint"]

#: Bodies of at least HASH_BIG bytes are hashed on a helper thread when a batch has
#: at least HASH_OFFLOAD bytes of them.
HASH_BIG = 64 * 1024
HASH_OFFLOAD = 512 * 1024


def fingerprint(body: bytes) -> bytes:
    """Content fingerprint of a message's exact bytes (SHA-256: fast with SHA-NI).

    Every decision that a destination message *is* a source message (the duplicate
    check, Gmail's one-copy rule, ``--verify-content``) compares these 32 bytes.
    """
    return hashlib.sha256(body).digest()


def checksum(body: bytes) -> bytes:
    """The 16-byte XXH3-128 of a message's bytes: the state's record of what was copied
    when no decision needs the SHA-256 (why: docs/performance.md item 18)."""
    return xxh3_128_digest(body)


def _fingerprint_all(bodies: Sequence[bytes | None]) -> list[bytes | None]:
    return [None if b is None else fingerprint(b) for b in bodies]


class Hasher:
    """Hashes batches of bodies; owns the helper thread (started on first need)."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    async def hash(
        self, bodies: Sequence[bytes | None], strong: Sequence[bool]
    ) -> list[bytes | None]:
        """SHA-256 of each body marked ``strong`` (the big ones on a helper thread), the
        XXH3-128 :func:`checksum` of the others.

        hashlib releases the GIL while it hashes a buffer of over 2 kB, so big bodies are
        hashed on the other core while the event loop goes on reading and writing the
        sockets.  Small bodies are hashed here: for them the thread would mostly trade the
        GIL back and forth.
        """
        out: list[bytes | None] = [None] * len(bodies)
        big: list[int] = []
        big_bytes = 0
        for i, b in enumerate(bodies):
            if b is None:
                continue
            if not strong[i]:
                out[i] = checksum(b)
            elif len(b) >= HASH_BIG:
                big.append(i)
                big_bytes += len(b)
            else:
                out[i] = fingerprint(b)
        if big and big_bytes < HASH_OFFLOAD:
            for i in big:
                out[i] = fingerprint(bodies[i])  # type: ignore[arg-type]
        elif big:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="yippiemove-hash")
            loop = asyncio.get_running_loop()
            fprs = await loop.run_in_executor(
                self._pool, _fingerprint_all, [bodies[i] for i in big]
            )
            for i, f in zip(big, fprs, strict=True):
                out[i] = f
        return out

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
