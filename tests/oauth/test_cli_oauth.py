"""``yippiemove move`` signing in with OAuth2 (issue 16), end to end, as a user would:
the loopback redirect driven by following the printed URL and posting the consent form,
Dovecot checking the tokens at the test provider, the refresh-token cache (0600) used by
the next run, a token file for the other side, and the refresh token never printed."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.doubles.oauth2 import OAuthServer
from tests.mailcheck import snapshot
from tests.transfer.test_move import make_message
from yippiemove.oauth import OAuthConfig, flows
from yippiemove.testing.dovecot import DovecotServer

SRC, DST = "src@example.test", "dst@example.test"


def _env(tmp: Path, providers: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIPPIEMOVE_")}
    env["YIPPIEMOVE_OAUTH_PROVIDERS_FILE"] = str(providers)
    env["XDG_DATA_HOME"] = str(tmp / "data")  # platformdirs: the user's data directory
    return env


def _args(server: DovecotServer, tmp: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "yippiemove.cli", "move",
        "--source", f"imap://{SRC}@127.0.0.1:{server.port}",
        "--dest", f"imap://{DST}@127.0.0.1:{server.port}",
        "--ca-file", str(server.ca_file),
        "--state", str(tmp / "state.sqlite"),
        "--report", str(tmp / "report.json"),
        "--retries", "0",
        *extra,
    ]  # fmt: skip


def _access_token(oauth: OAuthServer, config: OAuthConfig, address: str) -> str:
    prov = config.get("google")
    pending = flows.begin(prov, "http://127.0.0.1:9/cb")
    q = parse_qs(urlsplit(oauth.sign_in(pending.url, address)).query)
    grant, _ = asyncio.run(flows.finish(prov, pending, q["code"][0], "http://127.0.0.1:9/cb"))
    return grant["access_token"]


def _consent_in_the_browser(url: str, address: str) -> None:
    """What the user does with the printed URL: open it, sign in, Allow."""
    with httpx.Client(follow_redirects=False, timeout=20) as web:
        page = web.get(url)
        assert page.status_code == 200 and "Sign in as" in page.text
        request = re.search(r'name="request" value="([^"]+)"', page.text)
        assert request is not None
        action = url.split("?", 1)[0]
        answer = web.post(
            action, data={"request": request.group(1), "email": address, "decision": "allow"}
        )
        assert answer.status_code in (302, 303), answer.text
        back = web.get(answer.headers["location"])  # the redirect to our loopback server
        assert back.status_code == 200 and "Signed in" in back.text


def _run_signing_in(args: list[str], env: dict[str, str], address: str | None):
    """Run the CLI; when ``address`` is given, sign in as it at the URL it prints."""
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env=env, text=True,
    )  # fmt: skip
    err: list[str] = []
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    urls = 0
    for line in proc.stderr:
        err.append(line)
        if line.startswith("  http") and address is not None:
            urls += 1
            _consent_in_the_browser(line.strip(), address)
    proc.wait(timeout=120)
    reader.join(10)
    return proc.returncode, "".join(out), "".join(err), urls


@pytest.mark.timeout(180)
def test_move_with_oauth_loopback_sign_in_token_file_and_cache(
    dovecot_oauth: DovecotServer, oauth_server: OAuthServer, tmp_path: Path
):
    for i in range(6):
        dovecot_oauth.deliver(SRC, "INBOX" if i % 2 else "Work", make_message(i))
    providers = tmp_path / "providers.json"
    oauth_server.providers_json(path=providers)
    config = OAuthConfig.from_env({"YIPPIEMOVE_OAUTH_PROVIDERS_FILE": str(providers)})
    token_file = tmp_path / "dest.token"
    token_file.write_text(_access_token(oauth_server, config, DST) + "\n")
    env = _env(tmp_path, providers)
    args = _args(dovecot_oauth, tmp_path, "--source-oauth", "google",
                 "--dest-token-file", str(token_file))  # fmt: skip

    rc, out, err, urls = _run_signing_in(args, env, SRC)
    assert rc == 0, err[-3000:]
    assert urls == 1 and f"signed in to Google as {SRC}" in err
    assert oauth_server.introspected >= 2  # Dovecot checked our tokens (both sides)
    assert snapshot(dovecot_oauth.port, DST, "dstpass") == snapshot(
        dovecot_oauth.port, SRC, "srcpass"
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["totals"]["copied"] == 6

    # the refresh-token cache: 0700 directory, 0600 file, one entry, never printed
    cache = tmp_path / "data" / "yippiemove" / "oauth" / "tokens.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    entries = json.loads(cache.read_text())
    assert list(entries) == [f"google:{SRC}"]
    refresh = entries[f"google:{SRC}"]["refresh_token"]
    assert "access_token" not in entries[f"google:{SRC}"]
    for text in (out, err, (tmp_path / "report.json").read_text()):
        assert refresh not in text and token_file.read_text().strip() not in text
    assert refresh.encode() not in (tmp_path / "state.sqlite").read_bytes()

    # the next run signs in from the cache: no URL, nothing to do
    before = oauth_server.refreshed
    rc, out, err, urls = _run_signing_in(args, env, None)
    assert rc == 0, err[-3000:]
    assert urls == 0 and "(cached)" in err and oauth_server.refreshed > before

    # consent revoked: the cached grant is dropped and the user is asked again
    oauth_server.revoke(SRC)
    token_file.write_text(_access_token(oauth_server, config, DST) + "\n")
    rc, out, err, urls = _run_signing_in(args, env, SRC)
    assert rc == 0, err[-3000:]
    assert urls == 1 and "cached Google sign-in was refused" in err
    assert json.loads(cache.read_text())[f"google:{SRC}"]["refresh_token"] != refresh


def test_gmail_preset_signs_in_with_oauth_by_default_and_says_so(tmp_path: Path):
    """Without a password, the Gmail preset means OAuth2 (the message says how to use an
    app password instead); with no Google client configured the error says what to set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIPPIEMOVE_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    args = [sys.executable, "-m", "yippiemove.cli", "move", "--source", "alice@gmail.com",
            "--dest", "imap://bob@127.0.0.1:1", "--dry-run"]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    assert proc.returncode == 2
    assert (
        "gmail: signing in with OAuth2 (Google); use --source-password-file for an app "
        "password" in proc.stderr
    )
    assert "YIPPIEMOVE_GOOGLE_CLIENT_ID" in proc.stderr


def test_a_token_file_with_a_bad_grant_is_refused_without_echoing_it(tmp_path: Path):
    bad = tmp_path / "grant.json"
    bad.write_text(json.dumps({"kind": "refresh", "provider": "google", "refresh_tokn": "SEKRIT"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIPPIEMOVE_")}
    args = [sys.executable, "-m", "yippiemove.cli", "move", "--source", "imap://a@127.0.0.1:1",
            "--dest", "imap://b@127.0.0.1:2", "--source-token-file", str(bad),
            "--dest-password-file", str(bad), "--dry-run"]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    assert proc.returncode == 2 and "refresh_token" in proc.stderr
    assert "SEKRIT" not in proc.stderr + proc.stdout


MARKER = "MARKER-refresh-7f3a9c"


def test_a_refused_marker_refresh_token_is_never_printed(
    dovecot_oauth: DovecotServer, oauth_server: OAuthServer, tmp_path: Path
):
    """A JSON grant whose refresh token the provider refuses: the run stops with "sign in
    again" (exit 2) and the token shows nowhere: output, report, state."""
    providers = tmp_path / "providers.json"
    oauth_server.providers_json(path=providers)
    grant = tmp_path / "grant.json"
    grant.write_text(json.dumps({"kind": "refresh", "provider": "google", "refresh_token": MARKER}))
    pw = tmp_path / "dst.pw"
    pw.write_text("dstpass\n")
    args = _args(dovecot_oauth, tmp_path, "--source-token-file", str(grant),
                 "--dest-password-file", str(pw), "--verbose")  # fmt: skip
    rc, out, err, _ = _run_signing_in(args, _env(tmp_path, providers), None)
    assert rc == 2, err[-3000:]
    assert "sign in again" in err
    for text in (out, err, (tmp_path / "report.json").read_text()):
        assert MARKER not in text
    for f in tmp_path.rglob("*"):
        if f.is_file() and f != grant:
            assert MARKER.encode() not in f.read_bytes(), f


@pytest.mark.timeout(120)
def test_move_with_the_device_flow(
    dovecot_oauth: DovecotServer, oauth_server: OAuthServer, tmp_path: Path
):
    """--oauth-device prints a code and a URL; approving it on "another device" signs in."""
    dovecot_oauth.deliver(SRC, "INBOX", make_message(1))
    providers = tmp_path / "providers.json"
    oauth_server.providers_json(path=providers)
    pw = tmp_path / "dst.pw"
    pw.write_text("dstpass\n")
    args = _args(dovecot_oauth, tmp_path, "--source-oauth", "microsoft", "--oauth-device",
                 "--dest-password-file", str(pw), "--no-token-cache")  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=_env(tmp_path, providers))  # fmt: skip
    err = []
    for line in proc.stderr:
        err.append(line)
        found = re.search(r"enter the code (\S+)", line)
        if found:
            oauth_server.approve_device(found.group(1), SRC)
    proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(err)[-3000:]
    assert "/device" in "".join(err)
    assert not (tmp_path / "data" / "yippiemove" / "oauth").exists()  # --no-token-cache


def test_signing_in_as_another_account_is_refused(
    dovecot_oauth: DovecotServer, oauth_server: OAuthServer, tmp_path: Path
):
    providers = tmp_path / "providers.json"
    oauth_server.providers_json(path=providers)
    pw = tmp_path / "dst.pw"
    pw.write_text("dstpass\n")
    args = _args(dovecot_oauth, tmp_path, "--source-oauth", "google",
                 "--dest-password-file", str(pw))  # fmt: skip
    rc, _out, err, urls = _run_signing_in(args, _env(tmp_path, providers), DST)
    assert rc == 2 and urls == 1
    assert f"signed in to Google as {DST}, but the source account is {SRC}" in err
    assert not (tmp_path / "data" / "yippiemove" / "oauth").exists()  # nothing kept


def test_gmail_preset_moves_out_of_the_gmail_double_with_oauth_by_default(
    dovecot_oauth: DovecotServer, oauth_server: OAuthServer, tmp_path: Path
):
    """No password for a Gmail source: the preset signs in with OAuth2 (XOAUTH2 at the
    Gmail double, which checks the token at the test provider) and says so."""
    from tests.doubles.gmail import GmailServer

    me = "alice@gmail.com"
    providers = tmp_path / "providers.json"
    oauth_server.providers_json(path=providers)
    pw = tmp_path / "dst.pw"
    pw.write_text("dstpass\n")
    with GmailServer(users={me: "unused-password"}, oauth_server=oauth_server) as gmail:
        for i in range(3):
            gmail.add_message(me, make_message(i), {"\\Inbox"})
        args = [
            sys.executable, "-m", "yippiemove.cli", "move",
            "--source", f"imap://{me}@127.0.0.1:{gmail.port}", "--source-preset", "gmail",
            "--no-starttls",
            "--dest", f"imap://{DST}@127.0.0.1:{dovecot_oauth.port}",
            "--dest-password-file", str(pw),
            "--state", str(tmp_path / "state.sqlite"),
            "--report", str(tmp_path / "report.json"),
        ]  # fmt: skip
        rc, _out, err, urls = _run_signing_in(args, _env(tmp_path, providers), me)
    assert rc == 0, err[-3000:]
    assert "gmail: signing in with OAuth2 (Google); use --source-password-file" in err
    assert urls == 1
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["totals"]["copied"] == 3
    assert not any("accepts only OAuth2" in n for n in report["presets"].get("notes", []))
