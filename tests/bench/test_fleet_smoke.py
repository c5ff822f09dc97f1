"""bench/fleet.py at a tiny size, so that the fleet benchmark does not rot (issue 15).

Two jobs through `yippiemove serve` and its REST API, the same two transfers in one
process (the peer), and one small job alone on loopback and through the proxy: no delay,
no bandwidth cap (`--no-throttle`), so it takes seconds.  Every destination is verified
exact by the bench itself (its exit status is 1 otherwise).  The figures mean nothing at
this size; docs/benchmarks.md ("Traffic per machine") has the real ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fleet_bench_two_jobs(dovecot_installed: None, tmp_path: Path) -> None:
    out = tmp_path / "fleet.md"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "fleet.py"),
            "--sizes",
            "2",
            "--no-throttle",
            "--messages",
            "20",
            "--real-world",
            "2",
            "--single-runs",
            "1",
            "--single-preset",
            "small-2k-quick",
            "--proxies",
            "1",
            "--quiet-wait",
            "0",
            "--poll",
            "0.2",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = out.read_text()
    service = next(line for line in table.splitlines() if line.startswith("| service | 2 |"))
    peer = next(line for line in table.splitlines() if line.startswith("| one process | 2 |"))
    # exact, and the proxies carried the traffic (MB/s in+out is not zero)
    assert service.endswith("| yes |") and peer.endswith("| yes |")
    assert float(service.split("|")[4]) > 0
    assert "one job alone" in table
    assert out.with_suffix(".json").is_file()


def test_serve_takes_workers_for_500_jobs() -> None:
    """bench/fleet.py runs `serve --workers 500` (the option stopped at 256)."""
    from yippiemove.cli import serve

    ctx = serve.make_context("serve", ["--workers", "500"])
    assert ctx.params["workers"] == 500


def test_fleet_bench_hosts(dovecot_installed: None, tmp_path: Path) -> None:
    """``--hosts 1,2 --recovery`` at 4 tiny jobs: worker hosts in namespaces sharing
    PostgreSQL + Redis, TLS through proxies on the bridge, a host killed mid-run; all
    exact.  Root and iproute2 only (skips elsewhere, fails in CI, like the fleet tests)."""
    import pytest

    from tests.fleet import fleet_unavailable

    why = fleet_unavailable()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the fleet bench must run in CI: {why}", pytrace=False)
        pytest.skip(why)
    out = tmp_path / "hosts.md"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "fleet.py"),
            "--hosts",
            "1,2",
            "--jobs",
            "4",
            "--messages",
            "20",
            "--real-world",
            "0",
            "--no-throttle",
            "--proxies",
            "1",
            "--recovery",
            "--lease-seconds",
            "6",
            "--quiet-wait",
            "0",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=400,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = out.read_text().splitlines()
    rows = [line for line in lines if line.startswith(("| 1 | 4 |", "| 2 | 4 |"))]
    assert len(rows) == 2 and all(row.endswith("| yes |") for row in rows), rows
    assert "h1 2, h2 2" in rows[1]  # 2 workers a host: the 4 jobs spread
    recovery = next(line for line in lines if line.startswith("- recovery:"))
    assert "NEVER" not in recovery and "exact: yes" in recovery, recovery
