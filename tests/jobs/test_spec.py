"""JobSpec: one wire format for the job process, one place that checks a transfer."""

from __future__ import annotations

import pytest

from yippiemove.jobs.spec import (
    MAX_FOLDER_NAMES,
    Account,
    JobSpec,
    SpecError,
    check_account,
    check_folders,
)
from yippiemove.jobs.vocab import JobStatus, Security, endpoint_security

SRC = Account("imap.example.org", 993, "tls", "src", "s3cret-src")
DST = Account("127.0.0.1", 143, "starttls", "dst", "s3cret-dst")


def test_round_trip():
    spec = JobSpec(
        SRC,
        DST,
        folders={"include": [], "exclude": ["[A]rchive"], "since": "2020-01-01"},
        job_id="j1",
        ca_file="/etc/ca.pem",
        connections=4,
        retries=5,
        progress_interval=0.2,
    )
    assert JobSpec.from_json(spec.to_json()) == spec
    assert JobSpec.from_dict(spec.to_dict()) == spec
    assert "s3cret" not in repr(spec)


def test_the_job_process_reads_todays_stdin():
    spec = JobSpec.from_dict(
        {"source": SRC.as_dict(), "dest": DST.as_dict(), "folders": None, "job_id": "t"}
    )
    assert (spec.connections, spec.retries, spec.progress_interval) == (None, 3, 0.5)
    assert spec.to_dict()["options"] == {}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"source": SRC.as_dict(), "dest": {**DST.as_dict(), "port": "x"}}, "dest.port"),
        ({"source": {**SRC.public()}, "dest": DST.as_dict()}, "source.password"),
        ({"source": SRC.as_dict(), "dest": DST.as_dict(), "folders": {"only": []}}, "folders.only"),
        (
            {"source": SRC.as_dict(), "dest": DST.as_dict(), "folders": {"since": "2020-02-30"}},
            "folders.--since",
        ),
    ],
)
def test_errors_name_the_field(data, field):
    with pytest.raises(SpecError, match=rf"^{field}"):
        JobSpec.from_dict(data)


def test_one_cap_for_the_folder_lists():
    names = [f"F{i}" for i in range(MAX_FOLDER_NAMES)]
    assert check_folders({"include": names})["include"] == names
    with pytest.raises(SpecError, match=r"folders\.exclude: too many folders"):
        check_folders({"exclude": [*names, "one more"]})


def test_account_checks():
    assert (
        check_account(
            Account(" [::1] ", 143, "none", " u ", "p"), "source", allow_insecure_hosts=False
        ).host
        == "::1"
    )
    with pytest.raises(SpecError, match=r"dest\.security: 'none' is only allowed"):
        check_account(
            Account("mail.example.org", 143, "none", "u", "p"), "dest", allow_insecure_hosts=False
        )
    with pytest.raises(SpecError, match=r"source\.security: must be one of tls, starttls, none"):
        check_account(Account("h.example", 1, "ssl", "u", "p"), "source", allow_insecure_hosts=True)


def test_vocabularies_keep_their_strings():
    assert JobStatus.DONE == "done" and f"{JobStatus.QUEUED}" == "queued"
    assert endpoint_security(Security.STARTTLS, "127.0.0.1") == "starttls"
    assert endpoint_security("starttls", "imap.example.org") == "require-starttls"
    assert endpoint_security("tls", "imap.example.org") == "tls"
    assert endpoint_security("none", "imap.example.org") == "none"


def test_the_service_phases_include_every_engine_phase() -> None:
    from yippiemove.jobs.vocab import Phase
    from yippiemove.transfer.model import Phase as EnginePhase

    assert {p.value for p in EnginePhase} <= {p.value for p in Phase}


def test_the_folder_selection_is_parsed_once_into_rules_and_filters():
    from yippiemove.policy.rules import FolderRules, MessageFilter

    spec = JobSpec.from_json(
        JobSpec(
            SRC,
            DST,
            folders={"include": ["INBOX"], "rename": ["Old=New"], "larger": "10k"},
        ).to_json()
    )
    chosen = spec.folders
    assert chosen is not None and chosen.include == ("INBOX",) and chosen.exclude == ()
    assert isinstance(chosen.rules, FolderRules) and chosen.rules.renames
    assert isinstance(chosen.filters, MessageFilter) and chosen.filters.active
    assert spec.to_dict()["folders"] == {
        "include": ["INBOX"],
        "exclude": [],
        "rename": ["Old=New"],
        "larger": "10k",
    }
    with pytest.raises(SpecError, match="expected OLD=NEW"):
        JobSpec(SRC, DST, folders={"rename": ["no equals sign"]})


# -- OAuth2 (issue 16, contract 4) --------------------------------------------------------

GRANT = {"kind": "refresh", "provider": "google", "refresh_token": "rt-MARKER-secret"}
CONFIG = {"google": {"key": "google", "client_id": "cid", "client_secret": "cs-MARKER"}}


def test_an_oauth_account_travels_with_its_grant_and_never_shows_it():
    src = Account("imap.gmail.com", 993, "tls", "ann@example.com", "", GRANT)
    spec = JobSpec(src, DST, job_id="j1", oauth_config=CONFIG)
    assert "MARKER" not in repr(spec) and "MARKER" not in repr(src)
    assert src.public() == {
        "host": "imap.gmail.com",
        "port": 993,
        "security": "tls",
        "username": "ann@example.com",
        "oauth_provider": "google",
    }
    assert src.as_dict()["oauth"] == GRANT and "oauth_provider" not in src.as_dict()
    back = JobSpec.from_json(spec.to_json())
    assert back == spec and back.source.oauth == GRANT and back.oauth_config == CONFIG
    bare = spec.without_passwords()
    assert bare.source.oauth is None and bare.oauth_config is None
    assert "oauth" not in DST.as_dict() and "oauth_config" not in JobSpec(SRC, DST).to_dict()


def test_an_oauth_account_needs_no_password_but_a_grant_with_a_kind():
    acc = Account.from_dict({"host": "h.example", "username": "u", "oauth": GRANT}, "source")
    assert acc.password == "" and acc.oauth == GRANT
    check_account(acc, "source", allow_insecure_hosts=False)
    with pytest.raises(SpecError, match=r"source\.password: is required"):
        Account.from_dict({"host": "h.example", "username": "u"}, "source")
    with pytest.raises(SpecError, match=r"source\.oauth"):
        Account.from_dict({"host": "h.example", "username": "u", "oauth": "x"}, "source")
    with pytest.raises(SpecError, match=r"source\.oauth"):
        check_account(
            Account("h.example", 993, "tls", "u", "", {"x": 1}),
            "source",
            allow_insecure_hosts=False,
        )


def test_the_supervisor_builds_accounts_from_the_credentials_blob():
    from yippiemove.jobs.supervisor import _account

    public = SRC.public()
    acc = _account(public, {"source_password": "", "source_oauth": GRANT}, "source")
    assert acc.oauth == GRANT and acc.password == ""
    acc = _account(public, {"source_password": "pw"}, "source")
    assert acc.oauth is None and acc.password == "pw"
