"""The jobs layer lies below the service: nothing in yippiemove/jobs imports the service
or the front doors (the supervisor talks to the service through jobs/ports.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import yippiemove.jobs

JOBS = Path(yippiemove.jobs.__file__).parent
ABOVE = ("yippiemove.service", "yippiemove.web")


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against yippiemove.jobs
                base = ["yippiemove", "jobs"][: 2 - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            out += [mod] + [f"{mod}.{a.name}" for a in node.names]
    return out


def test_jobs_imports_nothing_above_it():
    bad = [
        f"{path.name}: {name}"
        for path in sorted(JOBS.glob("*.py"))
        for name in _imports(path)
        if name.startswith(ABOVE)
    ]
    assert bad == []
