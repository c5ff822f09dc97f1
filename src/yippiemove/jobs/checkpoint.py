"""Checkpoints of a job's state database, so that a job resumed on another worker host
starts from them, not from an empty state.

The job process keeps its state (transfer/state.py) in ``state.sqlite`` in its private
directory, on the local disk of the host that runs it.  The supervisor -- it has the
control database, the job process has none -- takes a consistent copy of it while the
job writes it (sqlite3's online backup API: a reader of the WAL database; the job's
writes go on), compresses it with zlib and stores it in the control database's
``job_checkpoints`` row of the job, in a transaction that checks the fencing token
(service/jobhost.py ``save_checkpoint``).  When a job is claimed, :func:`prepare_state`
decides which state the job process starts from (docs/design.md "Fencing and
checkpoints"):

* the job ran last on this host and its local file exists: that file (it is at least as
  new as any checkpoint, which was taken from it);
* otherwise the job's checkpoint, if there is one and it is sound (size and SHA-256 of
  the decompressed copy as recorded), replaces the local file (its ``-wal``/``-shm``
  removed);
* otherwise whatever is local (usually nothing: the job starts empty).  A state that is
  missing, stale or corrupt is never a danger -- the engine always checks the
  destination -- only slower.

Why the control database and not an object store: one thing less to run and to secure,
and the token check and the write are one transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .ports import Checkpoint

log = logging.getLogger("yippiemove.checkpoint")

__all__ = ["STATE_FILE", "StateSignature", "prepare_state", "restore", "signature", "take"]

STATE_FILE = "state.sqlite"
_CHUNK = 1 << 20

#: What changes when the state file changes: (size, mtime) of the file and its WAL.
StateSignature = tuple[tuple[int, int], ...]


def signature(path: Path) -> StateSignature | None:
    """(size, mtime) of ``path`` and its ``-wal``, None when there is no state file."""
    out = []
    for p in (path, path.with_name(path.name + "-wal")):
        try:
            st = p.stat()
        except FileNotFoundError:
            if p == path:
                return None
            st = None
        out.append((st.st_size, st.st_mtime_ns) if st is not None else (0, 0))
    return tuple(out)


def _state_bytes(path: Path) -> int:
    total = 0
    for p in (path, path.with_name(path.name + "-wal")):
        with contextlib.suppress(FileNotFoundError):
            total += p.stat().st_size
    return total


def take(path: Path, *, host: str, max_bytes: int) -> Checkpoint | None:
    """A consistent, compressed copy of the state database at ``path``; None when there
    is none or it is larger than ``max_bytes`` (logged).  Safe while a job writes it."""
    if not path.exists():
        return None
    on_disk = _state_bytes(path)
    if on_disk > max_bytes:
        log.warning(
            "state file %s is %d bytes (over %d): not checkpointed", path, on_disk, max_bytes
        )
        return None
    taken = time.time()
    with tempfile.TemporaryDirectory(prefix=".ckpt-", dir=path.parent.parent) as tmp:
        copy = Path(tmp) / "copy.sqlite"
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            dst = sqlite3.connect(copy)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()
        size = copy.stat().st_size
        if size > max_bytes:
            log.warning("state copy is %d bytes (over %d): not checkpointed", size, max_bytes)
            return None
        digest = hashlib.sha256()
        comp = zlib.compressobj(6)
        parts: list[bytes] = []
        with copy.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                parts.append(comp.compress(chunk))
        parts.append(comp.flush())
    return Checkpoint(
        host=host, taken=taken, size=size, sha256=digest.hexdigest(), data=b"".join(parts)
    )


class CorruptCheckpoint(ValueError):
    """A checkpoint whose data does not decompress to the recorded size and SHA-256."""


def _decompress(ckpt: Checkpoint) -> bytes:
    d = zlib.decompressobj()
    try:
        # Never more than the recorded size (+1 to notice a longer one): a damaged or
        # hostile blob cannot blow up the supervisor's memory.
        out = d.decompress(ckpt.data, ckpt.size + 1)
    except zlib.error as exc:
        raise CorruptCheckpoint(f"does not decompress ({exc})") from None
    if len(out) != ckpt.size or d.unconsumed_tail:
        raise CorruptCheckpoint(f"{len(out)} bytes, not the recorded {ckpt.size}")
    if hashlib.sha256(out).hexdigest() != ckpt.sha256:
        raise CorruptCheckpoint("SHA-256 differs from the recorded one")
    return out


def restore(workdir: Path, ckpt: Checkpoint) -> None:
    """Replace the job's state file with the checkpoint (CorruptCheckpoint: untouched)."""
    data = _decompress(ckpt)
    path = workdir / STATE_FILE
    tmp = workdir / (STATE_FILE + ".restoring")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # The old file's WAL and shared memory would be replayed onto the new file.
        for suffix in ("-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                (workdir / (STATE_FILE + suffix)).unlink()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@dataclass(frozen=True)
class Prepared:
    """Which state a claimed job starts from: "local", "checkpoint" or "empty", and the
    messages its state knows (the report and the progress say so)."""

    source: str
    messages: int = 0
    taken: float | None = None
    host: str | None = None


def known_messages(path: Path) -> int:
    """Messages the state file knows (0 when there is none or it cannot be read)."""
    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return int(db.execute("SELECT count(*) FROM messages").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def prepare_state(
    workdir: Path,
    *,
    host: str,
    last_host: str | None,
    load: Callable[[], Checkpoint | None],
) -> Prepared:
    """Put the state the job resumes from into ``workdir`` (the rule: module doc)."""
    path = workdir / STATE_FILE
    if last_host is not None and last_host == host and path.exists():
        return Prepared("local", known_messages(path))
    ckpt = load()
    if ckpt is not None:
        try:
            restore(workdir, ckpt)
        except CorruptCheckpoint as exc:
            log.error("checkpoint of %s ignored: %s", workdir.name, exc)
        else:
            log.info(
                "job %s: state restored from the checkpoint taken on %s (%d bytes)",
                workdir.name,
                ckpt.host,
                ckpt.size,
            )
            return Prepared("checkpoint", known_messages(path), ckpt.taken, ckpt.host)
    if path.exists():
        return Prepared("local", known_messages(path))
    return Prepared("empty")
