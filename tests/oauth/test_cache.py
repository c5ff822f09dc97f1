"""The CLI's refresh-token cache: 0600 file in a 0700 directory, one entry per provider
and address, no access tokens, refuses a file others can read."""

from __future__ import annotations

import os
import stat

import pytest

from yippiemove.oauth.cache import TokenCache, TokenCacheError

GRANT = {
    "kind": "refresh",
    "provider": "microsoft",
    "refresh_token": "rt-1",
    "access_token": "at-1",
    "expires_at": 1.0,
}


def test_entries_per_provider_and_address_with_safe_modes(tmp_path):
    old = os.umask(0o022)
    try:
        cache = TokenCache(tmp_path / "data" / "oauth" / "tokens.json")
        assert cache.get("microsoft", "a@example.test") is None
        cache.put("microsoft", "A@Example.test", GRANT)
        cache.put("google", "a@example.test", {**GRANT, "provider": "google"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.path.parent.stat().st_mode) == 0o700
    got = cache.get("microsoft", "a@example.test")
    assert got == {"kind": "refresh", "provider": "microsoft", "refresh_token": "rt-1"}
    assert cache.get("google", "a@example.test")["provider"] == "google"
    assert b"at-1" not in cache.path.read_bytes()
    assert cache.forget("microsoft", "a@example.test") is True
    assert cache.get("microsoft", "a@example.test") is None
    assert cache.forget("microsoft", "a@example.test") is False
    assert not [p for p in cache.path.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_cache_others_can_read_is_refused(tmp_path):
    cache = TokenCache(tmp_path / "tokens.json")
    cache.put("google", "a@example.test", {**GRANT, "provider": "google"})
    os.chmod(cache.path, 0o644)
    with pytest.raises(TokenCacheError, match="readable by others"):
        cache.get("google", "a@example.test")


def test_a_damaged_cache_is_only_a_cache(tmp_path):
    cache = TokenCache(tmp_path / "tokens.json")
    cache.path.write_text("{not json")
    os.chmod(cache.path, 0o600)
    assert cache.get("google", "a@example.test") is None
    cache.put("google", "a@example.test", {**GRANT, "provider": "google"})
    assert cache.get("google", "a@example.test") is not None
