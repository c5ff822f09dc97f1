"""transfer/report.py without a server: the report from hand-made results, the exit
status, and every exception -> outcome the two front doors show."""

from __future__ import annotations

import asyncio
import errno
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from yippiemove.imap.errors import (
    AuthenticationError,
    ConnectionLost,
    HostUnreachable,
    ImapError,
    ProtocolError,
)
from yippiemove.transfer.engine import PlanError
from yippiemove.transfer.model import AlteredMessage, Failure, FolderResult, Plan, Progress
from yippiemove.transfer.report import (
    Exit,
    Outcome,
    build_report,
    exit_code,
    outcome_of,
    write_report,
)
from yippiemove.transfer.state import StateError, state_error


@dataclass
class Ran:
    results: list[FolderResult] = field(default_factory=list)
    progress: Progress = field(default_factory=Progress)
    plan: Plan | None = None


def _results() -> list[FolderResult]:
    inbox = FolderResult(
        "INBOX",
        "INBOX",
        source_count=5,
        copied=3,
        present=1,
        failed=1,
        verified=4,
        content_verified=2,
        bytes_copied=300,
        failures=[Failure("INBOX", 7, 99, "<a@x>", "too big")],
    )
    work = FolderResult("Work", "Jobs", source_count=2, copied=0, labelled=2, verified=2)
    broken = FolderResult("Gone", "Gone", source_count=4, failed=4, error="it vanished")
    return [inbox, work, broken]


def test_build_report_totals_from_hand_made_results():
    progress = Progress(messages_done=6, messages_total=11, bytes_done=300, bytes_total=900)
    progress.failed, progress.reconnects = 5, 2
    before = time.time()
    rep = build_report(
        Ran(_results(), progress), "imap://a@h:143", "imap://b@h:143", 12.5, "done", None
    )
    assert rep["version"] == 1
    assert (rep["source"], rep["dest"], rep["started"]) == (
        "imap://a@h:143",
        "imap://b@h:143",
        12.5,
    )
    assert rep["finished"] >= before
    assert (rep["status"], rep["error"]) == ("done", None)
    assert rep["totals"] == {
        "folders": 3,
        "source_count": 11,
        "copied": 3,
        "already_present": 1,
        "labelled": 2,
        # one listed failure, plus every message of the folder that failed as a whole
        "failed": 1 + 4,
        "folders_failed": 1,
        "verified": 6,
        "content_verified": 2,
        "altered": 0,
        "bytes_copied": 300,
    }
    assert rep["progress"] == {
        "messages_done": 6,
        "messages_total": 11,
        "bytes_done": 300,
        "bytes_total": 900,
        "failed": 5,
        "reconnects": 2,
    }
    assert rep["plan"] is None
    assert [f["source"] for f in rep["folders"]] == ["INBOX", "Work", "Gone"]
    assert rep["failures"] == [
        {"folder": "INBOX", "uid": 7, "size": 99, "message_id": "<a@x>", "reason": "too big"}
    ]
    json.dumps(rep)  # plain JSON
    assert exit_code(rep) is Exit.FAILED


def test_status_and_exit_code():
    clean = [FolderResult("INBOX", "INBOX", source_count=1, copied=1, verified=1)]
    rep = build_report(Ran(clean), "s", "d", 0.0, "done", None)
    assert rep["status"] == "done" and exit_code(rep) is Exit.OK == 0
    assert build_report(Ran(), "s", "d", 0.0, "done", None)["totals"]["folders"] == 0
    # An error: aborted (exit 2), whatever the results; a cancel keeps its name.
    rep = build_report(Ran(clean), "s", "d", 0.0, "interrupted", "boom")
    assert (rep["status"], rep["error"], exit_code(rep)) == ("aborted", "boom", Exit.ABORTED)
    rep = build_report(Ran(clean), "s", "d", 0.0, "cancelled", "cancelled")
    assert (rep["status"], exit_code(rep)) == ("cancelled", Exit.ABORTED)
    assert [int(e) for e in (Exit.OK, Exit.FAILED, Exit.ABORTED)] == [0, 1, 2]


def test_messages_stored_altered_are_listed_and_not_a_failure():
    """Issue 13: "my mail is all there, the server rewrote line endings" exits 0, the
    altered messages counted and listed apart from the failures."""
    altered = AlteredMessage("INBOX", 3, 120, "<a@x>", 7, 116, "line endings CRLF -> LF")
    res = FolderResult("INBOX", "INBOX", source_count=2, copied=2, verified=1)
    res.stored_altered.append(altered)
    rep = build_report(Ran([res]), "s", "d", 0.0, "done", None)
    assert rep["totals"]["altered"] == 1 and rep["totals"]["failed"] == 0
    assert rep["altered_messages"] == [altered.as_dict()]
    assert rep["folders"][0]["altered"] == 1
    assert rep["altered_messages"][0]["what"] == "line endings CRLF -> LF"
    assert exit_code(rep) is Exit.OK


def _full_disk_error(tmp_path: Path) -> StateError:
    return state_error(tmp_path / "state.sqlite", OSError(errno.ENOSPC, "No space left on device"))


@pytest.mark.parametrize("job", [False, True])
def test_outcomes_both_front_doors_share(job):
    assert outcome_of(KeyboardInterrupt(), job=job) == Outcome(
        "interrupted", "interrupted; run the same command again to resume"
    )
    assert outcome_of(asyncio.CancelledError(), job=job) == Outcome("cancelled", "cancelled")
    assert outcome_of(PlanError("no folder matches --folder 'X'"), job=job) == Outcome(
        "aborted", "no folder matches --folder 'X'"
    )
    assert outcome_of(AuthenticationError("login refused"), job=job) == Outcome(
        "aborted", "login refused", transient=False
    )
    # A dropped connection after all the retries: a later run may succeed.
    assert outcome_of(ConnectionLost("connection lost"), job=job) == Outcome(
        "aborted", "connection lost", transient=True
    )
    assert outcome_of(HostUnreachable("cannot connect"), job=job).transient
    assert not outcome_of(ImapError("plain"), job=job).transient
    assert outcome_of(ProtocolError("unexpected token"), job=job) == Outcome(
        "aborted", "a server sent an answer that is not valid IMAP: unexpected token"
    )
    other = StateError("cannot open state file /x: not a database", reason="not a database")
    assert outcome_of(other, job=job) == Outcome("aborted", str(other))
    assert outcome_of(SystemExit(3), job=job) is None  # not a way a transfer ends


def test_outcomes_only_the_cli_leaves_to_a_traceback(tmp_path):
    assert outcome_of(MemoryError()) is None
    assert outcome_of(ValueError("a bug")) is None
    # The CLI names the user's own state file and what to do.
    disk = _full_disk_error(tmp_path)
    text = outcome_of(disk).error
    assert text.startswith(f"cannot write the job state ({tmp_path / 'state.sqlite'}): ")
    assert "No space left on device" in text


def test_outcomes_only_the_job_process_has(tmp_path):
    bug = outcome_of(ValueError("a secret detail"), job=True)
    assert bug == Outcome(
        "aborted", "internal error (ValueError); the operator can see job.log", bug=True
    )
    assert "secret" not in bug.error
    memory = outcome_of(MemoryError(), job=True)
    assert memory is not None and not memory.transient
    assert memory.error.startswith("the transfer needs more memory than the job's limit")
    # A full disk is said without the service's paths.
    disk = outcome_of(_full_disk_error(tmp_path), job=True).error
    assert str(tmp_path) not in disk
    assert disk.startswith("cannot write the job state on the service's disk: No space left")
    assert "re-run the transfer once the operator has freed some space" in disk


def test_write_report_is_atomic(tmp_path):
    path = tmp_path / "r.json"
    write_report(path, {"a": "é"})
    write_report(str(path), {"b": 1})
    assert json.loads(path.read_text(encoding="utf-8")) == {"b": 1}
    assert not (tmp_path / "r.json.tmp").exists()
    with pytest.raises(OSError):
        write_report(tmp_path / "missing" / "r.json", {})


_THREAD_UNDER_LIMIT = r"""
import resource, sys, threading
from yippiemove.transfer.report import outcome_of
resource.setrlimit(resource.RLIMIT_AS, (CAP, CAP))
hold = []
while True:  # fill the address space, leaving less than a thread's stack
    try:
        hold.append(bytearray(4 << 20))
    except MemoryError:
        break
try:
    threading.Thread(target=lambda: None).start()
except RuntimeError as exc:
    hold.clear()
    print(type(exc).__name__, "|", outcome_of(exc, job=True).error)
else:
    print("started")
"""


def test_a_thread_that_cannot_start_under_the_memory_limit_is_out_of_memory():
    """Near the job's RLIMIT_AS, the first allocation to fail may be a thread's stack
    (asyncio's resolver), which CPython reports as a RuntimeError: the customer is told
    the job needs more memory, not "internal error" (seen in CI on
    test_memory_blow_up_fails_one_job_only)."""
    import subprocess
    import sys

    limit = 400 << 20
    code = _THREAD_UNDER_LIMIT.replace("CAP", str(limit))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    ).stdout.strip()
    assert out == "RuntimeError | the transfer needs more memory than the job's limit of 400 MiB"
    # Without a limit the same words would be a lie: a RuntimeError is a bug then.
    plain = outcome_of(RuntimeError("can't start new thread"), job=True)
    assert plain is not None and plain.bug
