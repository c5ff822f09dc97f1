"""The job process enforces the egress policy itself (issue 14, attack class 1): an
order checked while its name resolved to a public address cannot reach loopback when
the name resolves there at run time (DNS rebinding between order and run)."""

from __future__ import annotations

from pathlib import Path

import pytest

import yippiemove.accounts as accounts
from yippiemove.jobs.jail import run_job
from yippiemove.testing.dovecot import DovecotServer


def spec(dovecot: DovecotServer, host: str, allow: str) -> dict:
    account = {"host": host, "port": dovecot.port, "security": "starttls"}
    return {
        "job_id": "rebind",
        "source": {**account, "username": "src", "password": "srcpass"},
        "dest": {**account, "username": "dst", "password": "dstpass"},
        "ca_file": str(dovecot.ca_file),
        "egress": {"allow": allow},
    }


def test_job_resolves_checks_and_refuses_loopback(
    dovecot: DovecotServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_up: list[str] = []

    def now_loopback(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return ["127.0.0.1"]

    monkeypatch.setattr(accounts, "resolve_host", now_loopback)
    work = tmp_path / "job"
    work.mkdir()
    code, result = run_job(spec(dovecot, "mail.customer.test", "203.0.113.0/24"), work)
    assert code == 2 and result["status"] == "aborted", result
    assert "(= 127.0.0.1) is a loopback address" in result["error"], result
    assert "mail.customer.test" in looked_up


def test_a_spec_without_egress_is_strict(dovecot: DovecotServer, tmp_path: Path) -> None:
    s = spec(dovecot, "127.0.0.1", "")
    del s["egress"]
    work = tmp_path / "job"
    work.mkdir()
    code, result = run_job(s, work)
    assert code == 2 and "loopback" in result["error"], result
