"""bench/run.py measures with TLS by default (issue 19): ``--security tls|starttls|none``
(implicit TLS by default), the old ``--plain``/``--tls`` spellings, and ``--with-plain``
(each mover's ``+plain`` twin in the same run, with the ratios and targets of what TLS
costs).

The units check what each mover is given in each mode (port, TLS settings, verification);
one real run of the bench (yippiemove only, the tiny ``mixed`` corpus, one run) checks that
the TLS variant and its plain twin are both exact, that Dovecot saw the one log in over
TLS and the other not, and that the JSON has the new ratios.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def _bench_module(name: str) -> ModuleType:
    """A module of bench/ as run.py sees its neighbours (top-level names; appended to the
    path, so nothing installed is shadowed)."""
    if str(BENCH) not in sys.path:
        sys.path.append(str(BENCH))
    return importlib.import_module(name)


run = _bench_module("run")
imapsync_peer = _bench_module("imapsync_peer")

PORT, TLS_PORT = 1143, 1993
CA = "/x/ca.pem"


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("security", "port", "want", "unwanted"),
    [
        (
            "tls",
            TLS_PORT,
            ["SSLType IMAPS", f"CertificateFile {CA}", "SystemCertificates no"],
            ["SSLType STARTTLS", "SSLType None"],
        ),
        (
            "starttls",
            PORT,
            ["SSLType STARTTLS", f"CertificateFile {CA}", "SystemCertificates no"],
            ["SSLType IMAPS", "SSLType None"],
        ),
        (
            "none",
            PORT,
            ["SSLType None", "AuthMechs LOGIN"],
            ["SSLType IMAPS", "STARTTLS", "Certificate"],
        ),
    ],
)
def test_mbsyncrc(security: str, port: int, want: list[str], unwanted: list[str]) -> None:
    rc = run.mbsyncrc(port, CA, "dst", Path("/state"), security=security)
    lines = rc.splitlines()
    # both stores (far and near) carry the port and the TLS settings
    assert lines.count(f"Port {port}") == 2
    for line in want:
        assert lines.count(line) == 2, (line, rc)
    for text in unwanted:
        assert text not in rc
    assert lines.count("Host localhost") == 2  # isync 1.4 checks DNS names only


@pytest.mark.parametrize(
    ("security", "port", "want"),
    [
        (
            "tls",
            TLS_PORT,
            ["imapc_ssl = imaps", "imapc_ssl_verify = yes", f"ssl_client_ca_file = {CA}"],
        ),
        (
            "starttls",
            PORT,
            ["imapc_ssl = starttls", "imapc_ssl_verify = yes", f"ssl_client_ca_file = {CA}"],
        ),
        ("none", PORT, ["imapc_ssl = no"]),
    ],
)
def test_dsync_conf(security: str, port: int, want: list[str]) -> None:
    conf = run.dsync_conf(Path("/srv/dovecot.conf"), port, CA, security=security)
    lines = conf.splitlines()
    assert f"imapc_port = {port}" in lines
    assert "imapc_host = 127.0.0.1" in lines
    for line in want:
        assert line in lines, conf
    assert sum(1 for line in lines if line.startswith("imapc_ssl =")) == 1
    if security == "none":
        assert "verify" not in conf and "ca_file" not in conf


@pytest.mark.parametrize(
    ("security", "flags"),
    [
        ("tls", ["--ssl1", "--ssl2"]),
        ("starttls", ["--tls1", "--tls2"]),
        ("none", ["--nossl1", "--nossl2", "--notls1", "--notls2"]),
    ],
)
def test_imapsync_argv(security: str, flags: list[str]) -> None:
    port = TLS_PORT if security == "tls" else PORT
    argv = imapsync_peer.imapsync_argv(
        Path("imapsync"), port, "src", "dst", Path("pw"), Path("rdir"), security=security, ca=CA
    )
    for flag in flags:
        assert flag in argv
    assert argv[argv.index("--port1") + 1] == argv[argv.index("--port2") + 1] == str(port)
    sslargs = [argv[i + 1] for i, a in enumerate(argv) if a in ("--sslargs1", "--sslargs2")]
    if security == "none":
        assert sslargs == [] and "--ssl1" not in argv and "--tls1" not in argv
    else:
        assert sslargs == ["SSL_verify_mode=1", f"SSL_ca_file={CA}"] * 2
        other = "--tls1" if security == "tls" else "--ssl1"
        assert other not in argv


def test_parse_args_security() -> None:
    assert run.parse_args([]).security == "tls"
    assert run.parse_args([]).with_plain is False
    assert run.parse_args(["--plain"]).security == "none"
    assert run.parse_args(["--tls"]).security == "starttls"  # the old spelling
    assert run.parse_args(["--starttls"]).security == "starttls"
    for mode in ("tls", "starttls", "none"):
        assert run.parse_args(["--security", mode]).security == mode
    assert run.parse_args(["--with-plain"]).with_plain is True
    assert run.parse_args(["--starttls", "--with-plain"]).with_plain is True


@pytest.mark.parametrize(
    "argv",
    [
        ["--plain", "--with-plain"],
        ["--security", "none", "--with-plain"],
        ["--plain", "--tls"],
        ["--security", "tls", "--plain"],
    ],
)
def test_parse_args_refuses(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run.parse_args(argv)
    assert "error" in capsys.readouterr().err


class _FakeServer:
    """What PresetBench reads of its DovecotServer before any run (nothing started)."""

    def __init__(self, base_dir: Path, users: dict[str, str]) -> None:
        self.base_dir = base_dir
        self.port, self.tls_port = PORT, TLS_PORT
        self.ca_file = base_dir / "ssl" / "ca.pem"
        self.config_path = base_dir / "dovecot.conf"


def _bench(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *argv: str, latency: bool = False
) -> Any:
    monkeypatch.setattr(run, "DovecotServer", _FakeServer)
    args = run.parse_args(["--movers", "yippiemove,mbsync,dsync,imapsync", *argv])
    b = run.PresetBench(
        run.corpus.PRESETS["mixed-quick"],
        args,
        tmp_path,
        "/usr/bin/mbsync",
        latency,
        code_dir=tmp_path / "code",
    )
    b.imapsync = (Path("/x/imapsync"), "imapsync 2.2")
    return b


def test_variants_with_plain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = _bench(tmp_path, monkeypatch, "--with-plain", latency=True)
    assert b.variants() == [
        "yippiemove",
        "yippiemove+plain",
        "mbsync",
        "mbsync+plain",
        "dsync",
        "dsync+plain",
        "imapsync",
        "imapsync+plain",
        "yippiemove@40ms",
    ]
    assert "yippiemove+plain" not in _bench(tmp_path / "b", monkeypatch).variants()


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize(
    ("security", "scheme", "port"), [("tls", "imaps", TLS_PORT), ("starttls", "imap", PORT)]
)
def test_argv_of_each_variant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, security: str, scheme: str, port: int
) -> None:
    """The run's variants connect as --security says; the +plain twins over plain IMAP."""
    b = _bench(tmp_path, monkeypatch, "--security", security, "--with-plain")
    n = iter(range(100))

    def argv(variant: str) -> tuple[list[str], Path]:
        rdir = tmp_path / "runs" / str(next(n))
        rdir.mkdir(parents=True)
        return b._argv(variant, "dst", rdir), rdir

    ym, _ = argv("yippiemove")
    assert _flag(ym, "--source") == f"{scheme}://src@127.0.0.1:{port}"
    assert _flag(ym, "--dest") == f"{scheme}://dst@127.0.0.1:{port}"
    assert _flag(ym, "--ca-file") == str(b.server.ca_file)
    assert "--no-starttls" not in ym
    plain, _ = argv("yippiemove+plain")
    assert _flag(plain, "--source") == f"imap://src@127.0.0.1:{PORT}"
    assert _flag(plain, "--dest") == f"imap://dst@127.0.0.1:{PORT}"
    assert "--no-starttls" in plain
    # the twin is a yippiemove run of the code under test
    assert plain[: plain.index("move")] == ym[: ym.index("move")]
    assert b._env("yippiemove+plain") == b._env("yippiemove")
    assert b._env("yippiemove+plain")["PYTHONPATH"] == str(tmp_path / "code")

    _, rdir = argv("mbsync")
    assert (rdir / "mbsyncrc").read_text() == run.mbsyncrc(
        port, str(b.server.ca_file), "dst", rdir / "mbsync-state", security=security
    )
    _, rdir = argv("mbsync+plain")
    rc = (rdir / "mbsyncrc").read_text()
    assert f"Port {PORT}" in rc and "SSLType None" in rc
    _, rdir = argv("dsync")
    assert f"imapc_port = {port}\n" in (rdir / "dsync.conf").read_text()
    _, rdir = argv("dsync+plain")
    conf = (rdir / "dsync.conf").read_text()
    assert f"imapc_port = {PORT}\n" in conf and "imapc_ssl = no\n" in conf
    isync, _ = argv("imapsync")
    assert _flag(isync, "--port1") == str(port)
    assert ("--ssl1" if security == "tls" else "--tls1") in isync
    isync_plain, _ = argv("imapsync+plain")
    assert _flag(isync_plain, "--port1") == str(PORT) and "--nossl1" in isync_plain
    # the proxies relay to the port of the run's mode
    assert b.port(b.args.security) == port


def _row(mb_s: float, cpu: float) -> dict[str, Any]:
    return {"mb_s": mb_s, "msgs_s": mb_s * 10, "mover_cpu_s": cpu, "mover_peak_rss_mb": 50.0}


def test_ratios_and_targets_of_what_tls_costs() -> None:
    summary = {
        "yippiemove": _row(240.0, 1.8),
        "yippiemove+plain": _row(300.0, 1.2),
        "mbsync": _row(80.0, 2.0),
        "mbsync+plain": _row(200.0, 1.0),
        "yippiemove@40ms": _row(180.0, 1.9),
    }
    rat = run.ratios(summary, "yippiemove@40ms")
    assert rat["yippiemove/yippiemove+plain MB/s"] == 0.8
    assert rat["yippiemove/yippiemove+plain mover CPU s"] == 1.5
    assert rat["mbsync/mbsync+plain MB/s"] == 0.4
    assert rat["mbsync/mbsync+plain mover CPU s"] == 2.0
    assert rat["yippiemove/mbsync MB/s"] == 3.0
    tgt = {
        t["goal"]: t
        for t in run.targets(
            "mixed", summary, rat, 10**8, 1000, 10**6, "yippiemove@40ms", security="tls"
        )
    }
    share = tgt["yippiemove (TLS) MB/s >= 70% of its plain MB/s"]
    assert (share["value"], share["threshold"], share["met"]) == (0.8, 0.7, True)
    cpu = tgt["yippiemove mover CPU with TLS <= 1.5x its plain CPU"]
    assert (cpu["value"], cpu["threshold"], cpu["met"]) == (1.5, 1.5, True)
    (rtt,) = [t for g, t in tgt.items() if g.startswith("yippiemove@40ms >=")]
    assert rtt["threshold"] == run.GOAL_RTT_SHARE_TLS == 0.8
    assert "80%" in rtt["goal"] and "TLS" in rtt["goal"]
    assert rtt["value"] == 0.75 and rtt["met"] is False
    # the CPU target on every preset; plain runs keep the 50% RTT goal and no TLS targets
    small = run.targets(
        "small", summary, rat, 10**8, 1000, 10**6, "yippiemove@40ms", security="tls"
    )
    assert any(t["goal"].startswith("yippiemove mover CPU with TLS") for t in small)
    plain = run.targets(
        "mixed", summary, rat, 10**8, 1000, 10**6, "yippiemove@40ms", security="none"
    )
    assert not any("its plain" in t["goal"] for t in plain)
    (rtt,) = [t for t in plain if t["goal"].startswith("yippiemove@40ms >=")]
    assert rtt["threshold"] == 0.5


# --------------------------------------------------------------------------- the real bench


def _logins(log: str, user: str) -> list[str]:
    """How ``user`` (a regular expression) logged in, login by login: "TLS" (implicit TLS
    or STARTTLS) or "secured" (plain IMAP on loopback), from Dovecot's imap-login lines."""
    return re.findall(rf"Login: user=<{user}>, .*?, (TLS|secured)\b", log)


def test_bench_measures_tls_and_plain_in_one_run(dovecot_installed: None, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [
            sys.executable,
            str(BENCH / "run.py"),
            "--quick",
            "--preset",
            "mixed",
            "--movers",
            "yippiemove",
            "--runs",
            "1",
            "--latency-presets",
            "",
            "--with-plain",
            "--quiet-wait",
            "0",
            "--retry-noisy",
            "0",
            "--keep",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
    )
    tail = r.stdout[-4000:] + r.stderr[-3000:]
    kept = re.search(r"work directory kept: (\S+)", r.stdout)
    try:
        assert r.returncode == 0, tail
        data = json.loads(out.read_text())
        assert data["config"]["security"] == "tls" and data["config"]["with_plain"] is True
        assert "SSLType IMAPS" in data["config"]["mbsyncrc"]
        assert "imapc_ssl = imaps" in data["config"]["dsync_conf"]
        assert "bench-pw" not in json.dumps(data["config"])
        (preset,) = data["presets"].values()
        summary = preset["summary"]
        assert set(summary) == {"yippiemove", "yippiemove+plain"}, tail
        messages = preset["corpus"]["imap_messages"]
        for variant in summary:
            assert summary[variant]["exact"], (variant, summary[variant], tail)
        runs = {x["variant"]: x for x in preset["runs"]}
        assert runs["yippiemove"]["security"] == "tls"
        assert runs["yippiemove+plain"]["security"] == "none"
        for x in runs.values():  # both parsed as yippiemove runs ("Done:" totals)
            assert x["report_totals"]["messages"] == messages, x
            assert x["report_totals"]["failed"] == 0
        rat = preset["ratios"]
        assert rat["yippiemove/yippiemove+plain MB/s"] > 0
        assert rat["yippiemove/yippiemove+plain mover CPU s"] > 0
        goals = {t["goal"]: t for t in preset["targets"]}
        share = goals["yippiemove (TLS) MB/s >= 70% of its plain MB/s"]
        assert share["value"] == rat["yippiemove/yippiemove+plain MB/s"]
        assert "yippiemove mover CPU with TLS <= 1.5x its plain CPU" in goals
        # Dovecot's own word: the TLS variant's connections were TLS, the twin's were not
        # (each destination is also read by the checker, over plain IMAP: "secured")
        assert kept, tail
        (log_path,) = Path(kept.group(1)).glob("*/dovecot/dovecot.log")
        log = log_path.read_text()
        assert "TLS" in _logins(log, r"dst-yippiemove-1-\d+"), log[-3000:]
        assert "TLS" not in _logins(log, r"dst-yippiemove-plain-1-\d+"), log[-3000:]
        # the source: read once over plain IMAP by the checker before the runs, then by
        # the movers only: the TLS variant over TLS, its twin in plain
        src = _logins(log, "src")
        assert src[0] == "secured" and "TLS" in src[1:], src
        assert src.count("secured") >= 2, src
    finally:
        if kept:
            shutil.rmtree(kept.group(1), ignore_errors=True)
