#!/usr/bin/env python3
"""What running an account check in its own limited process costs (issue 14).

    .venv/bin/python bench/check_cost.py [--runs 10]

Starts a throwaway Dovecot with a few folders and times the same check (log in, list,
plan) two ways: in this process (``checkproc.check``, what the web process did before)
and through ``Service.check_account`` (a child process with the jail's limits).  Prints
the median wall-clock time of each, the difference (the child's cost per check) and the
CPU time the children used.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from yippiemove.service.checkproc import check
from yippiemove.service.config import Settings
from yippiemove.service.core import Account, Service
from yippiemove.testing.dovecot import DovecotServer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("YIPPIEMOVE_EGRESS_ALLOW", "127.0.0.0/8")
    with tempfile.TemporaryDirectory() as tmp:
        with DovecotServer(Path(tmp) / "dovecot", users={"bench": "Bench-pw-12345"}) as server:
            for name in ("Archive", "Work", "Work/Projects", "Lists", "Lists/python"):
                server.deliver("bench", name, b"Subject: hi\r\n\r\nbody\r\n")
            account = Account("127.0.0.1", server.port, "none", "bench", "Bench-pw-12345")
            settings = Settings.load(Path(tmp) / "data", allow_insecure_hosts=True)
            svc = Service(settings)
            request = {
                "account": dict(account.public(), password=account.password),
                "role": "source",
                "dest": None,
                "ca_file": None,
                "allow_insecure_hosts": True,
            }
            here: list[float] = []
            child: list[float] = []
            cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            for _ in range(args.runs):
                t = time.perf_counter()
                result = asyncio.run(check(request))
                here.append(time.perf_counter() - t)
                assert result["ok"], result
                t = time.perf_counter()
                folders = asyncio.run(svc.check_account(account, role="source"))
                child.append(time.perf_counter() - t)
                assert len(folders) == len(result["folders"])
            cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            svc.close()
    in_ms = statistics.median(here) * 1000
    out_ms = statistics.median(child) * 1000
    cpu_ms = ((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)) * 1000
    print(f"checks: {args.runs} each, {len(folders)} folders")
    print(f"in the web process : {in_ms:7.1f} ms median")
    print(f"in a child process : {out_ms:7.1f} ms median")
    print(f"cost of the child  : {out_ms - in_ms:7.1f} ms per check (wall)")
    print(f"child CPU          : {cpu_ms / args.runs:7.1f} ms per check (user+system)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
