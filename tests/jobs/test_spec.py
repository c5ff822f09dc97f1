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
