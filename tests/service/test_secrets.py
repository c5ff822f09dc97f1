"""Settings, credential encryption, password and token hashing."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet

from yippiemove.service.config import Settings, read_or_create_secret
from yippiemove.service.secrets import (
    KEY_ENV,
    CredentialBox,
    CredentialsUnreadable,
    hash_password,
    hash_token,
    new_token,
    verify_password,
)


@pytest.mark.sqlite_file("checks the default database URL")
def test_settings_defaults_environment_and_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("YIPPIEMOVE_SMTP_HOST", "mail.example.org")
    monkeypatch.setenv("YIPPIEMOVE_SMTP_PORT", "2525")
    monkeypatch.setenv("YIPPIEMOVE_ALLOW_INSECURE_HOSTS", "yes")
    monkeypatch.setenv("YIPPIEMOVE_WORKERS", "5")
    s = Settings.load(tmp_path / "d", workers=3)
    assert s.data_dir == tmp_path / "d"
    assert s.database_url == f"sqlite:///{tmp_path / 'd' / 'control.sqlite'}"
    assert (s.smtp_host, s.smtp_port, s.allow_insecure_hosts) == ("mail.example.org", 2525, True)
    assert s.workers == 3  # the command line wins over the environment
    assert stat.S_IMODE(os.stat(s.data_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(s.jobs_dir).st_mode) == 0o700
    monkeypatch.setenv("YIPPIEMOVE_DATA_DIR", str(tmp_path / "env"))
    assert Settings.load().data_dir == tmp_path / "env"
    monkeypatch.setenv("YIPPIEMOVE_SMTP_PORT", "lots")
    with pytest.raises(ValueError, match="YIPPIEMOVE_SMTP_PORT"):
        Settings.load(tmp_path / "d")
    monkeypatch.delenv("YIPPIEMOVE_SMTP_PORT")
    with pytest.raises(TypeError, match="unknown setting"):
        Settings.load(tmp_path / "d", no_such_thing=1)


def test_key_file_is_created_0600_and_reused(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    path = tmp_path / "keys" / "credentials.key"
    box = CredentialBox.from_settings(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    blob = box.encrypt({"source_password": "s3cret", "dest_password": "other"})
    assert b"s3cret" not in blob
    again = CredentialBox.from_settings(path)
    assert again.decrypt(blob) == {"source_password": "s3cret", "dest_password": "other"}


def test_key_file_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "k"
    path.write_bytes(Fernet.generate_key())
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        read_or_create_secret(path, Fernet.generate_key)


def test_key_from_environment_wins_and_wrong_key_is_a_clear_error(tmp_path, monkeypatch):
    key = Fernet.generate_key()
    monkeypatch.setenv(KEY_ENV, key.decode())
    box = CredentialBox.from_settings(tmp_path / "unused.key")
    assert not (tmp_path / "unused.key").exists()
    blob = box.encrypt({"source_password": "a"})
    assert CredentialBox(key).decrypt(blob) == {"source_password": "a"}
    with pytest.raises(CredentialsUnreadable, match="key"):
        CredentialBox(Fernet.generate_key()).decrypt(blob)
    monkeypatch.setenv(KEY_ENV, "not-a-key")
    with pytest.raises(ValueError, match=KEY_ENV):
        CredentialBox.from_settings(tmp_path / "unused.key")


def test_password_hashing_is_argon2():
    h = hash_password("correct horse")
    assert h.startswith("$argon2id$")
    assert "correct horse" not in h
    assert verify_password(h, "correct horse")
    assert not verify_password(h, "wrong")
    assert not verify_password("garbage", "correct horse")


def test_the_service_hashes_passwords_with_argon2s_default_parameters():
    """The tests hash with cheap parameters (tests/conftest.py); the service itself (a
    process of its own here) with argon2-cffi's defaults (RFC 9106's second choice)."""
    code = "from yippiemove.service.secrets import hash_password; print(hash_password('x'))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.startswith("$argon2id$v=19$m=65536,t=3,p=4$"), out


def test_tokens_are_random_and_hashed():
    a, b = new_token(), new_token()
    assert a != b and a.startswith("ym_") and len(a) > 40
    assert hash_token(a) != a and len(hash_token(a)) == 64
    assert hash_token(a) == hash_token(a)
