"""The import contract: layers point down, and an import that points up fails here.

The contracts are `[tool.importlinter]` in pyproject.toml (why they are what they are:
docs/design.md, "Test doubles and the import contract"). This runs import-linter's
`lint-imports` on the installed package, the same check CI would run by hand.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports_command() -> list[str]:
    """The venv's `lint-imports` (beside this interpreter), or the same entry point via -c."""
    script = Path(sys.executable).with_name("lint-imports")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"]


def test_import_contract_holds() -> None:
    result = subprocess.run(
        [*_lint_imports_command(), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"lint-imports failed (an import points up?):\n{output}"
    assert "0 broken" in output, output
