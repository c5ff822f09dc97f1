"""The domain batch page (issue 16) over the REAL Service, the test OAuth2 provider and
a Dovecot with the ``oauth2`` passdb: a service account key uploaded as its JSON file and
never shown back, a batch from a list of addresses (each mailbox signed in to first),
the refused lines listed, the key deleted."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from tests.doubles.oauth2 import OAuthServer
from tests.transfer.oauthkit import config_for
from tests.web.conftest import Browser
from yippiemove.service.config import Settings
from yippiemove.service.core import Service
from yippiemove.testing.dovecot import DovecotServer
from yippiemove.web.app import create_app


def test_the_domain_page_stores_a_key_runs_a_checked_batch_and_deletes_the_key(
    oauth_server: OAuthServer, dovecot_factory: Callable[..., DovecotServer], tmp_path: Path
) -> None:
    server = dovecot_factory(
        users={"src-ann@example.test": "a", "dst@new.test": "d"},  # no mailbox for bob
        oauth2_introspection_url=oauth_server.introspection_url_with_credentials,
    )
    key = oauth_server.add_service_account(domains=["example.test"])
    marker = key["private_key"].splitlines()[3]
    svc = Service(
        Settings.load(
            tmp_path / "svc",
            ca_file=str(server.ca_file),
            maintenance_interval=3600.0,
            egress_allow="127.0.0.0/8",
            oauth=config_for(oauth_server, tmp_path),
        )
    )
    try:
        b = Browser(TestClient(create_app(svc)))
        b.signup("admin@example.test")
        page = b.get("/batch/domain")
        assert page.status_code == 200 and "None yet." in page.text
        r = b.post(
            "/batch/domain/credentials",
            {"kind": "service_account", "domain": "example.test", "label": "Workspace"},
            files={"key_file": ("key.json", json.dumps(key).encode(), "application/json")},
        )
        assert r.status_code == 303, r.text
        page = b.get("/batch/domain").text
        assert "Workspace" in page and key["client_email"] in page and marker not in page
        cred = re.search(r"/batch/domain/credentials/([0-9a-f]+)/delete", page)
        assert cred is not None
        # A key that is not one: the page says why, nothing stored.
        r = b.post(
            "/batch/domain/credentials",
            {"kind": "service_account", "domain": "example.test"},
            files={"key_file": ("k.json", b'{"type": "authorized_user"}', "application/json")},
        )
        assert r.status_code == 400 and "not a service account key" in r.text
        # The batch: ann signs in and starts; bob has no mailbox, carol is of another domain.
        r = b.post(
            "/batch/domain",
            {
                "source": cred.group(1),
                "source_host": "127.0.0.1",
                "source_port": str(server.port),
                "source_security": "starttls",
                "dest": "server",
                "dest_host": "127.0.0.1",
                "dest_port": str(server.port),
                "dest_security": "starttls",
                "users": "src-ann@example.test,dst@new.test,d\n"
                "\n# bob has no mailbox\n"
                "src-bob@example.test,dst@new.test,d\n"
                "carol@else.test,dst@new.test,d\n",
            },
        )
        assert r.status_code == 303, r.text
        page = b.get("/batch/domain").text
        assert "1 transfer started" in page
        # Numbered as the box's lines (the blank and the # line count).
        assert "line 4: src-bob@example.test: source: " in page
        assert "line 5: carol@else.test: carol@else.test is not in example.test" in page
        uid = svc.authenticate("admin@example.test", "correct horse battery")
        (job,) = svc.list_transfers(uid)
        assert job.source["username"] == "src-ann@example.test" and job.status == "queued"
        # Deleted: gone from the page and from the service.
        r = b.post(f"/batch/domain/credentials/{cred.group(1)}/delete", {})
        assert r.status_code == 303
        assert "None yet." in b.get("/batch/domain").text
        assert svc.list_domain_credentials(uid) == []
    finally:
        svc.close()
