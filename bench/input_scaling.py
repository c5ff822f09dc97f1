"""How the service's input-size paths scale: n, seconds, ratio per doubling.

Each path is run on inputs of n and 2n (and 4n) entries; the ratio of the times per
doubling is printed.  A ratio near 2 is linear, near 4 quadratic (issue 14, class 3:
a server listing ~20,000 folders or a form with ~16,000 plan entries froze the web app).

    .venv/bin/python bench/input_scaling.py                 # every path, 10k/20k/40k
    .venv/bin/python bench/input_scaling.py --sizes 2000,4000,8000 --path plan,depth

Run from the repository root (the planning path uses the test suite's in-memory store,
tests/transfer/memstore.py, so that only our own CPU time is measured).  Each path gets
a time budget: a path whose previous size took longer than ``--budget`` seconds is not
run at the next size (printed as "skipped").
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if not __package__:  # run as a script: the repository's tests/ (the memory store)
    sys.path.insert(0, str(ROOT))

from yippiemove.imap.client import MailboxInfo  # noqa: E402
from yippiemove.imap.protocol import ResponseParser  # noqa: E402
from yippiemove.jobs.spec import FolderSelection  # noqa: E402
from yippiemove.policy.folders import Namespace  # noqa: E402
from yippiemove.policy.rules import FolderRules, place_folders  # noqa: E402
from yippiemove.policy.special import Box  # noqa: E402
from yippiemove.transfer.plan import select_folders  # noqa: E402
from yippiemove.web.forms import parse_plan, plan_json, with_depth  # noqa: E402
from yippiemove.web.selection import exact_pattern, selection_to_folders  # noqa: E402


def folder_names(n: int) -> list[str]:
    """n folder names in a realistic tree: 1/10 top level, the rest one or two below."""
    names = ["INBOX"]
    i = 0
    while len(names) < n:
        top = f"Project {i:05d}"
        names.append(top)
        for j in range(9):
            if len(names) >= n:
                break
            names.append(f"{top}/Sub {j}" if j % 3 else f"{top}/Sub {j - 1 if j else 0}/Deep {j}")
        i += 1
    return names[:n]


def make_plan_case(n: int) -> Callable[[], object]:
    from tests.transfer.memstore import Folder, MemoryServer

    from yippiemove.transfer.engine import Mover
    from yippiemove.transfer.model import Endpoint, Options

    server = MemoryServer()
    src = server.account("src")
    for name in folder_names(n):
        src.folders.setdefault(name, Folder())
    server.account("dst")
    names = folder_names(n)
    # what the web order sends when most but not all folders are ticked
    spec = selection_to_folders(names, names[: n - n // 10])
    assert spec is not None
    exclude = spec["exclude"]

    def run() -> object:
        ep_s = Endpoint("127.0.0.1", 1, "src", security="none")
        ep_d = Endpoint("127.0.0.2", 1, "dst", security="none")
        mover = Mover(ep_s, ep_d, options=Options(exclude=list(exclude)), stores=server.factory)

        async def go() -> object:
            s = await mover.connect(ep_s, "source", read_only=True)
            d = await mover.connect(ep_d, "destination")
            return await mover.make_plan(s, d)

        return asyncio.run(go())

    return run


def select_case(n: int) -> Callable[[], object]:
    names = folder_names(n)
    boxes = [MailboxInfo(x.encode(), x, "/", frozenset()) for x in names]
    include = [exact_pattern(x) for x in names[: n // 2]]
    ns = Namespace("", "/")
    return lambda: select_folders(boxes, include, [], ns)


def selection_case(n: int) -> Callable[[], object]:
    names = folder_names(n)
    picked = names[::2]
    return lambda: selection_to_folders(names, picked)


def depth_case(n: int) -> Callable[[], object]:
    plan = [
        {"name": x, "messages": 1, "bytes": 1, "dest_name": x, "selected": True, "reasons": []}
        for x in folder_names(n)
    ]
    return lambda: with_depth(plan)


def form_case(n: int) -> Callable[[], object]:
    plan = [
        {"name": x, "messages": 1, "bytes": 1, "dest_name": x, "selected": True, "reasons": []}
        for x in folder_names(n)
    ]
    text = plan_json(plan)
    return lambda: with_depth(parse_plan(text) or [])


def place_case(n: int) -> Callable[[], object]:
    names = folder_names(n)
    boxes = [Box(x, frozenset()) for x in names]
    ns = Namespace("", "/")
    return lambda: place_folders(boxes, ns, [], ns, FolderRules())


def rules_case(n: int) -> Callable[[], object]:
    """n folders and n/4 --rename rules (a rule list with thousands of rules)."""
    names = folder_names(n)
    boxes = [Box(x, frozenset()) for x in names]
    ns = Namespace("", "/")
    tops = [x for x in names if "/" not in x and x != "INBOX"]
    renames = [f"{t}=Moved/{t}" for t in tops[: n // 4]]
    return lambda: place_folders(boxes, ns, [], ns, FolderRules.parse(renames=renames))


def spec_case(n: int) -> Callable[[], object]:
    names = folder_names(n)
    data = {"include": [exact_pattern(x) for x in names], "exclude": []}
    return lambda: FolderSelection.of(json.loads(json.dumps(data)))


def list_case(n: int) -> Callable[[], object]:
    lines = b"".join(
        b'* LIST (\\HasNoChildren) "/" "' + x.encode() + b'"\r\n' for x in folder_names(n)
    )
    data = lines + b"A1 OK LIST done\r\n"

    def run() -> object:
        p = ResponseParser()
        out = []
        for i in range(0, len(data), 16384):  # as the socket delivers it
            out += p.feed(data[i : i + 16384])
        return out

    return run


def batch_case(n: int) -> Callable[[], object]:
    from yippiemove.service.config import Settings
    from yippiemove.service.core import Service

    buf = io.StringIO()
    w = csv.writer(buf)
    for i in range(n):
        w.writerow(
            [
                "imap.example.com", "993", "tls", f"u{i}@example.com", "pw-source-1234",
                "imap.example.org", "993", "tls", f"u{i}@example.org", "pw-dest-123456",
            ]
        )  # fmt: skip
    text = buf.getvalue()
    import tempfile

    tmp = tempfile.mkdtemp(prefix="ym-scaling-")
    svc = Service(Settings.load(Path(tmp)))
    return lambda: svc.validate_batch_csv(text)


PATHS: dict[str, Callable[[int], Callable[[], object]]] = {
    "plan": make_plan_case,
    "select_folders": select_case,
    "selection": selection_case,
    "depth": depth_case,
    "form": form_case,
    "place": place_case,
    "rules": rules_case,
    "spec": spec_case,
    "list_parse": list_case,
    "batch": batch_case,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="10000,20000,40000")
    ap.add_argument("--path", default=",".join(PATHS), help="comma-separated: " + ", ".join(PATHS))
    ap.add_argument("--budget", type=float, default=30.0, help="seconds; larger sizes skipped")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'path':<16}{'n':>8}{'seconds':>10}{'ratio':>8}")
    for name in args.path.split(","):
        prev: float | None = None
        for n in sizes:
            if prev is not None and prev > args.budget:
                print(f"{name:<16}{n:>8}{'skipped':>10}")
                continue
            fn = PATHS[name](n)
            t0 = time.perf_counter()
            fn()
            took = time.perf_counter() - t0
            ratio = f"{took / prev:.2f}" if prev else ""
            print(f"{name:<16}{n:>8}{took:>10.3f}{ratio:>8}", flush=True)
            prev = took


if __name__ == "__main__":
    main()
