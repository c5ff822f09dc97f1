"""``yippiemove move --source-service-account KEYFILE`` (issue 16): one mailbox of a
Google Workspace domain moved through the service account's domain-wide delegation (JWT
bearer, the subject the address), against Dovecot's oauth2 passdb and the test
provider; no password, no consent, the key's private part never printed.  A subject
outside the delegation is refused saying so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.doubles.oauth2 import OAuthServer
from tests.mailcheck import snapshot
from tests.transfer.test_move import make_message
from yippiemove.testing.dovecot import DovecotServer, MaildirMessage

SRC, DST = "src-ann@example.test", "ann@new.test"


def run(
    server: DovecotServer, tmp: Path, providers: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIPPIEMOVE_")}
    env["YIPPIEMOVE_OAUTH_PROVIDERS_FILE"] = str(providers)
    env["XDG_DATA_HOME"] = str(tmp / "data")
    (tmp / "dst.pw").write_text("new-ann")
    args = [
        sys.executable, "-m", "yippiemove.cli", "move",
        "--source", f"imap://{SRC}@127.0.0.1:{server.port}",
        "--dest", f"imap://{DST}@127.0.0.1:{server.port}",
        "--dest-password-file", str(tmp / "dst.pw"),
        "--ca-file", str(server.ca_file),
        "--state", str(tmp / "state.sqlite"),
        "--retries", "0",
        *extra,
    ]  # fmt: skip
    return subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def test_move_one_mailbox_through_a_service_account(
    oauth_server: OAuthServer, dovecot_factory: Callable[..., DovecotServer], tmp_path: Path
) -> None:
    server = dovecot_factory(
        users={SRC: "pw-ann", DST: "new-ann", "src-bob@other.test": "pw-bob"},
        oauth2_introspection_url=oauth_server.introspection_url_with_credentials,
    )
    server.deliver_many(
        SRC, "INBOX", [MaildirMessage(make_message(i, size=100 * i), ()) for i in range(5)]
    )
    providers = tmp_path / "providers.json"
    oauth_server.providers_json(path=providers)
    key = oauth_server.add_service_account(domains=["example.test"])
    keyfile = tmp_path / "key.json"
    keyfile.write_text(json.dumps(key))
    done = run(server, tmp_path, providers, "--source-service-account", str(keyfile))
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        snapshot(server.port, DST, "new-ann")["INBOX"]
        == snapshot(server.port, SRC, "pw-ann")["INBOX"]
    )
    marker = key["private_key"].splitlines()[3]
    assert marker not in done.stdout + done.stderr
    assert oauth_server.issued >= 1
    # A mailbox the delegation does not cover: refused, saying why; nothing copied.
    other = run(
        server,
        tmp_path,
        providers,
        "--source-service-account",
        str(keyfile),
        "--source",
        f"imap://src-bob@other.test@127.0.0.1:{server.port}",
    )
    assert other.returncode != 0
    assert "unauthorized_client" in other.stderr, other.stderr[-2000:]
    assert marker not in other.stdout + other.stderr


def test_move_one_mailbox_with_a_microsoft_app(
    oauth_server: OAuthServer,
    dovecot_factory: Callable[..., DovecotServer],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """``--source-ms-app FILE``: the application's app-only token (client credentials),
    IMAP signing in as the address with it (the Gmail double takes application tokens for
    the users of the application's domain); the secret only ever in the file."""
    from tests.doubles.gmail import GmailServer
    from tests.source_guard import guard_sources

    secret = "Cli-App-Secret-4e2a"
    oauth_server.add_client("cli-app", secret, app_domain="contoso.test")
    target = dovecot_factory(users={DST: "new-ann"})
    source = GmailServer(
        users={"src-ann@contoso.test": "pw"}, oauth_server=oauth_server, oauth_scope=None
    )
    with (
        source,
        guard_sources(
            request,
            source,
            users=lambda: list(source._accounts),
            loaders=("add_user", "add_message", "create_label"),
            running=lambda: source.running,
        ),
    ):
        for i in range(3):
            source.add_message("src-ann@contoso.test", make_message(40 + i), labels=("\\Inbox",))
        providers = tmp_path / "providers.json"
        oauth_server.providers_json(path=providers)
        app = tmp_path / "app.json"
        app.write_text(
            json.dumps({"tenant": "contoso.test", "client_id": "cli-app", "client_secret": secret})
        )
        done = run(
            target,
            tmp_path,
            providers,
            "--source",
            f"imap://src-ann@contoso.test@127.0.0.1:{source.port}",
            "--source-ms-app",
            str(app),
            "--no-starttls",
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert secret not in done.stdout + done.stderr
        got = snapshot(target.port, DST, "new-ann")["INBOX"]
        assert sum(got.values()) == 3
        # A file that is not an application: refused, saying what it expected.
        app.write_text('{"tenant": "contoso.test"}')
        bad = run(target, tmp_path, providers, "--source-ms-app", str(app))
        assert bad.returncode == 2 and "client_id: is required" in bad.stderr, bad.stderr
