"""scripts/serve (issue 17): pip runs only when pyproject.toml changed (a stamp with its
hash in .venv), and the start-up line says what it serves and whether e-mail goes out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.web.browser import free_port

ROOT = Path(__file__).resolve().parents[2]


def _fake_project(tmp: Path) -> Path:
    """scripts/serve in a copy of the layout, with a .venv whose python and yippiemove
    only log how they were called (a real pip install takes 8-30 s)."""
    (tmp / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "serve", tmp / "scripts" / "serve")
    (tmp / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = []\n')
    bin_ = tmp / ".venv" / "bin"
    bin_.mkdir(parents=True)
    for name in ("python", "yippiemove"):
        (bin_ / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "$(dirname "$0")/../calls"\n')
        (bin_ / name).chmod(0o755)
    return tmp


def _serve(project: Path, *args: str, **env: str) -> list[str]:
    calls = project / ".venv" / "calls"
    calls.unlink(missing_ok=True)
    subprocess.run(
        ["bash", str(project / "scripts" / "serve"), *args],
        check=True,
        env={**os.environ, **env},
        capture_output=True,
        timeout=30,
    )
    return calls.read_text().splitlines()


def test_serve_installs_only_when_pyproject_changed(tmp_path: Path) -> None:
    project = _fake_project(tmp_path)
    first = _serve(project, "--port", "9")
    assert first == ["python -m pip install -q -e .", "yippiemove serve --port 9"]
    assert _serve(project, "--port", "9") == ["yippiemove serve --port 9"]  # no pip
    with (project / "pyproject.toml").open("a") as f:
        f.write("# a new dependency\n")
    assert _serve(project)[0] == "python -m pip install -q -e ."
    assert _serve(project) == ["yippiemove serve"]
    assert _serve(project, YIPPIEMOVE_REINSTALL="1")[0] == "python -m pip install -q -e ."


def test_serve_install_failure_leaves_no_stamp(tmp_path: Path) -> None:
    project = _fake_project(tmp_path)
    python = project / ".venv" / "bin" / "python"
    python.write_text("#!/bin/sh\nexit 1\n")
    with pytest.raises(subprocess.CalledProcessError):
        _serve(project)
    assert not (project / ".venv" / ".yippiemove-installed").exists()


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({}, "e-mail: off (no SMTP server set, no mail is sent)"),
        (
            {"YIPPIEMOVE_SMTP_HOST": "127.0.0.1", "YIPPIEMOVE_SMTP_PORT": "2525"},
            "e-mail: on via 127.0.0.1:2525",
        ),
    ],
)
def test_start_up_line_says_url_and_whether_mail_goes_out(
    tmp_path: Path, env: dict[str, str], said: str
) -> None:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("YIPPIEMOVE_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "yippiemove.cli",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
            "--workers",
            "1",
        ],
        env={**clean, **env},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        line = ""
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if "yippiemove is running at" in line or not line:
                break
        assert f"yippiemove is running at http://127.0.0.1:{port}/" in line, line
        assert said in line
    finally:
        proc.terminate()
        proc.wait(timeout=30)
