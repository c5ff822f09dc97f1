"""Run ``yippiemove`` under cProfile with a CPU-time clock (used by ``run.py --profile``).

    python bench/profile_yippiemove.py OUT.prof move --source ... --dest ...

``python -m cProfile`` times functions by wall clock, so time spent waiting in
``epoll`` would look like work; this profiles with ``time.process_time`` instead, so
the figures are CPU seconds.
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main() -> int:
    out = sys.argv[1]
    sys.argv = ["yippiemove", *sys.argv[2:]]
    prof = cProfile.Profile(time.process_time)
    code: int | str | None = 0
    prof.enable()
    try:
        runpy.run_module("yippiemove.cli", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    finally:
        prof.disable()
        prof.dump_stats(out)
    return code if isinstance(code, int) else (0 if code is None else 1)


if __name__ == "__main__":
    sys.exit(main())
