"""E-mail notifications through a real (local) SMTP server."""

from __future__ import annotations

from yippiemove.service.config import Settings
from yippiemove.service.notify import Notifier

JOB = {
    "id": "abc123",
    "status": "done",
    "source": {"host": "imap.old.example", "port": 993, "security": "tls", "username": "me@old"},
    "dest": {"host": "imap.new.example", "port": 993, "security": "tls", "username": "me@new"},
    "progress": {"messages_done": 1200, "messages_total": 1200, "bytes_done": 52_000_000},
    "error": None,
}


def test_mail_reaches_the_smtp_server(tmp_path, smtp_sink):
    settings = Settings.load(
        tmp_path,
        smtp_host="127.0.0.1",
        smtp_port=smtp_sink.port,
        smtp_from="moves@yippiemove.example",
        base_url="https://move.example",
    )
    n = Notifier(settings)
    n.job_done("owner@example.org", JOB)
    n.job_failed("owner@example.org", dict(JOB, status="failed", error="the source went away"))
    n.flush()
    done = smtp_sink.wait_for(lambda m: "complete" in m["Subject"])
    assert done["To"] == "owner@example.org"
    assert done["From"] == "moves@yippiemove.example"
    assert done["Auto-Submitted"] == "auto-generated"
    body = done.get_content()
    assert "me@old on imap.old.example" in body and "me@new on imap.new.example" in body
    assert "1,200 of 1,200" in body  # thousands separators (issue 17)
    assert "https://move.example/transfers/abc123" in body
    failed = smtp_sink.wait_for(lambda m: "failed" in m["Subject"])
    assert "the source went away" in failed.get_content()
    assert smtp_sink.envelopes[0] == ("moves@yippiemove.example", ["owner@example.org"])


def test_without_smtp_host_nothing_is_sent(tmp_path, smtp_sink):
    n = Notifier(Settings.load(tmp_path))
    assert not n.enabled
    n.job_done("owner@example.org", JOB)
    n.flush()
    assert smtp_sink.messages == []


def test_a_dead_smtp_server_does_not_raise(tmp_path):
    from tests.svckit import free_port

    n = Notifier(Settings.load(tmp_path, smtp_host="127.0.0.1", smtp_port=free_port()))
    n.job_started("owner@example.org", JOB)
    n.flush()  # logged and dropped
