"""Issue 14, class 3: linear time on every input-size path.

A server listing ~20,000 folders froze the web app for over a minute while planning (a
list-membership test per folder), a form with ~16,000 plan entries for ~70 s (the depth
computation).  Each path here gets tens of thousands of entries and a generous time
bound that only a quadratic step breaks (bench/input_scaling.py measures the figures:
docs/performance.md).  The same-result checks (brute force against the index) keep the
behaviour identical.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from bench.input_scaling import folder_names

from tests.transfer.memstore import Folder, MemoryServer
from yippiemove.imap.client import MailboxInfo
from yippiemove.policy import folders as fp
from yippiemove.policy.rules import FolderRules, place_folders
from yippiemove.policy.special import Box
from yippiemove.transfer.engine import Mover
from yippiemove.transfer.model import Endpoint, Options
from yippiemove.transfer.plan import _FolderIndex, _pattern_matches, select_folders
from yippiemove.web.forms import with_depth
from yippiemove.web.selection import could_match, exact_pattern, selection_to_folders


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def test_planning_20000_folders_is_linear() -> None:
    """The service's check plans one account: 20,000 folders, 2,000 excluded by name
    (what the web order sends).  Before: minutes (``m in kept`` per folder)."""
    n = 20_000
    server = MemoryServer()
    names = folder_names(n)
    for name in names:
        server.account("src").folders.setdefault(name, Folder())
    server.account("dst")
    spec = selection_to_folders(names, names[: n - n // 10])
    assert spec is not None and len(spec["exclude"]) == n // 10
    ep_s = Endpoint("127.0.0.1", 1, "src", security="none")
    ep_d = Endpoint("127.0.0.2", 1, "dst", security="none")
    mover = Mover(ep_s, ep_d, options=Options(exclude=spec["exclude"]), stores=server.factory)

    async def go():  # type: ignore[no-untyped-def]
        s = await mover.connect(ep_s, "source", read_only=True)
        d = await mover.connect(ep_d, "destination")
        return await mover.make_plan(s, d)

    plan, took = timed(lambda: asyncio.run(go()))
    assert len(plan.folders) == n - n // 10
    assert took < 40, f"planning 20,000 folders took {took:.1f} s"


def test_select_folders_10000_patterns_over_20000_folders() -> None:
    names = folder_names(20_000)
    boxes = [MailboxInfo(x.encode(), x, "/", frozenset()) for x in names]
    include = [exact_pattern(x) for x in names[::2]]
    chosen, took = timed(lambda: select_folders(boxes, include, [], fp.Namespace("", "/")))
    assert [m.name for m in chosen] == names[::2]
    assert took < 20, f"took {took:.1f} s"


def test_web_selection_of_20000_folders() -> None:
    names = folder_names(20_000)
    spec, took = timed(lambda: selection_to_folders(names, names[::2]))
    assert spec is not None and len(spec["exclude"]) == 10_000
    assert took < 20, f"took {took:.1f} s"


def test_depth_of_16000_plan_entries() -> None:
    plan = [{"name": x, "selected": True} for x in folder_names(16_000)]
    out, took = timed(lambda: with_depth(plan))
    assert {f["depth"] for f in out} == {0, 1, 2}
    assert took < 15, f"took {took:.1f} s"


def test_a_rename_rule_per_folder_over_30000_folders() -> None:
    """30,000 --rename rules (one per folder) over 30,000 folders: each folder's rule is
    found by its path's prefixes, not by trying every rule (before: ~2 minutes)."""
    names = folder_names(30_000)
    rules = FolderRules.parse(renames=[f"{x}=Moved/{x}" for x in names if x != "INBOX"])
    ns = fp.Namespace("", "/")
    out, took = timed(
        lambda: place_folders([Box(x, frozenset()) for x in names], ns, [], ns, rules)
    )
    assert sum(p.dest.startswith("Moved/") for p in out) == len(names) - 1
    assert took < 30, f"took {took:.1f} s"


def test_folder_index_finds_what_the_definition_matches() -> None:
    """The index (transfer/plan.py) against the definition, on random names, separators,
    namespaces and patterns (exact names, the web's exact globs, general globs)."""
    rnd = random.Random(14)
    alpha = ["INBOX", "inbox", "A", "a", "B", "Sub", "x*y", "[q]", "?", ".", "/", "INBOX."]
    for _ in range(1500):
        sep = rnd.choice(["/", ".", None])
        names = {"".join(rnd.choices(alpha, k=rnd.randint(1, 3))) for _ in range(12)}
        boxes = [
            MailboxInfo(x.encode(), x, rnd.choice([sep, sep, "/", "."]), frozenset()) for x in names
        ]
        ns = rnd.choice([None, fp.Namespace("", sep or "/"), fp.Namespace("INBOX.", ".")])

        def logical(name: str, ns: fp.Namespace | None = ns) -> str | None:
            if ns is None:
                return None
            try:
                return "/".join(fp.split_name(name, ns))
            except ValueError:
                return None

        paths = {m.name: logical(m.name) for m in boxes}
        index = _FolderIndex(boxes, paths)
        patterns = [*names, *(exact_pattern(x) for x in names), "*", "A*", "[!A]*", "Inbox/A"]
        patterns += ["".join(rnd.choices(alpha, k=rnd.randint(1, 3))) for _ in range(8)]
        for p in patterns:
            want = {i for i, m in enumerate(boxes) if _pattern_matches(p, m, paths.get(m.name))}
            assert index.matching(p) == want, (p, names, sep, ns)


def test_web_selection_same_as_the_definition() -> None:
    """selection_to_folders's index against ``could_match`` tried on every name."""
    rnd = random.Random(7)
    alpha = ["INBOX", "inbox", "A", "a", "B", "*", ".", "/", "INBOX/", "INBOX."]
    for _ in range(1500):
        names = list(
            dict.fromkeys("".join(rnd.choices(alpha, k=rnd.randint(1, 3))) for _ in range(10))
        )
        picked = [x for x in names if rnd.random() < 0.5] or names[:1]
        spec = selection_to_folders(names, picked)
        if spec is None:
            continue
        side = set((spec["include"] and picked) or [x for x in names if x not in picked])
        pats = spec["include"] or spec["exclude"]
        expect = [
            x
            if not any(c in x for c in "*?[") and all(o in side for o in names if could_match(x, o))
            else exact_pattern(x)
            for x in names
            if x in side
        ]
        assert pats == expect, (names, picked)


def test_batch_of_10000_lines_is_parsed_linearly(tmp_path: Path) -> None:
    """The batch CSV's parsing path with 10,000 lines (the operator may allow that many:
    ``batch_max_transfers``, 1,000 by default): already linear before issue 14 (a
    regression guard)."""
    from yippiemove.service.config import Settings
    from yippiemove.service.core import Service

    lines = [
        f"imap.example.com,993,tls,u{i}@example.com,pw-src-123456,"
        f"imap.example.org,993,tls,u{i}@example.org,pw-dst-123456"
        for i in range(10_000)
    ]
    svc = Service(
        Settings.load(tmp_path / "svc", maintenance_interval=3600.0, batch_max_transfers=10_000)
    )
    svc.resolve = lambda host, port: ["93.184.216.34"]  # no DNS in the timing (egress)
    try:
        (rows, errors), took = timed(lambda: svc.validate_batch_csv("\n".join(lines)))
    finally:
        svc.close()
    assert len(rows) == 10_000 and not errors
    assert took < 30, f"took {took:.1f} s"
