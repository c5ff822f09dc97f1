"""100 transfers at once through the REST API of a real `yippiemove serve` under an
open-file limit of 1,024 (issue 18), by bench/many_jobs.py at a small size (20 messages
a mailbox, so it takes seconds): no lock error or descriptor failure in the service's
log, no job failed for a service-side reason, every job done and exact (every
destination compared with its source message by message).  The bench's own smoke test
too; docs/benchmarks.md ("Many jobs on one machine") has its real figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench(tmp_path: Path, name: str, *args: str, timeout: float) -> tuple[dict, str, int]:
    """Run bench/many_jobs.py with ``args`` (plain IMAP, a quick end-poll, --json):
    (the one run's figures, the output's tail, the exit status)."""
    out = tmp_path / name
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "many_jobs.py"), *args,
         "--security", "none", "--end-poll", "0.5", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
    )
    tail = r.stdout[-4000:] + r.stderr[-4000:]
    assert out.is_file(), tail
    (run,) = json.loads(out.read_text())["runs"]
    return run, tail, r.returncode


def test_hundred_jobs_at_once_under_1024_descriptors(
    dovecot_installed: None, tmp_path: Path
) -> None:
    # plain IMAP on loopback and a quicker end: the service is under test here, not TLS
    run, tail, code = _bench(
        tmp_path, "many.json", "--sizes", "100", "--messages", "20", "--nofile", "1024",
        timeout=240,
    )
    assert run["jobs"] == 100 and run["nofile"] == 1024
    assert run["lock_errors"] == 0, (run["event_examples"], tail)
    assert run["fd_errors"] == 0, (run["event_examples"], tail)
    assert run["failed_service"] == 0, (run["errors"], tail)
    assert run["done"] == 100, (run["errors"], tail)
    assert run["not_exact"] == [], tail
    assert run["messages"] == 100 * 20
    # every figure the table needs was measured
    assert run["post_lat"]["n"] >= 100 and run["list_lat"]["n"] >= 1
    assert run["job_pss_kb"]["n"] >= 1 and run["service_cpu"] > 0 and run["job_seconds"] > 0
    assert code == 0, tail


def test_a_hard_open_file_limit_below_the_jobs_own_fails_no_job(
    dovecot_installed: None, tmp_path: Path
) -> None:
    """A service whose hard RLIMIT_NOFILE (384) is below ``job_max_open_files`` (1,024):
    a job process cannot be given more than its parent's hard limit, and asking for it
    failed every job at its start ('the job process ended unexpectedly', found by the
    bench).  Now each job gets the hard limit, and all end exact."""
    run, tail, code = _bench(
        tmp_path, "low.json", "--sizes", "4", "--messages", "10", "--nofile", "384",
        timeout=180,
    )
    assert run["nofile"] == 384
    assert run["done"] == 4 and run["failed_service"] == 0, (run["errors"], tail)
    assert run["not_exact"] == [], tail
    assert code == 0, tail
