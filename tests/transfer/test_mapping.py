"""Special folders, folder rules, message filters and the dry-run plan, end to end.

Real Dovecot servers on both sides; what arrived is judged by imaplib (tests/mailcheck.py):
per folder, every message's exact bytes, flags and INTERNALDATE, with multiplicity.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from datetime import UTC, datetime

import pytest

from tests import mailcheck
from tests.svckit import FAST
from yippiemove.imap import utf7
from yippiemove.service.config import Settings
from yippiemove.service.core import Account, Service, ServiceError
from yippiemove.web.forms import folders_to_plan, parse_plan, plan_json
from yippiemove.web.schemas import FoldersIn

T0 = datetime(2015, 3, 4, 12, 0, 0, tzinfo=UTC)


def msg(i: int, size: int = 0, tag: str = "m") -> bytes:
    """A message; with ``size``, padded to exactly that many bytes (CRLF form)."""
    head = (
        f"From: Sender {i} <s{i}@example.org>\r\n"
        "To: Receiver <r@example.net>\r\n"
        f"Subject: {tag} {i}\r\n"
        f"Message-ID: <{tag}{i}@example.org>\r\n\r\n"
    ).encode()
    body = f"Body {i}\r\n".encode()
    raw = head + body
    if size:
        assert size >= len(raw) + 2, size
        raw = head + b"x" * (size - len(raw) - 2) + b"\r\n" + body
        assert len(raw) == size
    return raw


def enc(name: str) -> str:
    return utf7.encode(name).decode()


def move(src, dst, tmp_path, *extra, src_user="src", dst_user="dst"):
    return mailcheck.run_move(
        src.port,
        dst.port,
        tmp_path,
        *extra,
        ca_file=src.ca_file,
        source_user=src_user,
        dest_user=dst_user,
    )


def report_of(path) -> dict:
    return json.loads(path.read_text())


def folder_names(server, user: str, password: str) -> set[str]:
    c = mailcheck.connect(server.port, user, password)
    try:
        return {n for n, (_s, attrs) in mailcheck.folders(c).items() if "\\Noselect" not in attrs}
    finally:
        c.logout()


def union_first_wins(first: Counter, second: Counter) -> Counter:
    """Two merged folders: every message of ``first``, plus the copies of a message that
    ``second`` holds more often than ``first`` (matched by exact bytes)."""
    out = Counter(first)
    in_first = Counter()
    for m, n in first.items():
        in_first[m.sha] += n
    for m, n in second.items():
        extra = n - in_first[m.sha]
        if extra > 0:
            out[m] += extra
    return out


def run_ok(src, dst, tmp_path, *extra, **kw) -> dict:
    report = tmp_path / "report.json"
    r = move(src, dst, tmp_path, "--report", str(report), *extra, **kw)
    assert r.returncode == 0, r.stderr + r.stdout
    return report_of(report)


# --------------------------------------------------------------------- special folders


def test_two_sent_folders_stay_apart_without_a_rule(dovecot_factory, tmp_path):
    """Debian's stock Dovecot marks both "Sent" and "Sent Messages" \\Sent: without a rule
    only "Sent" goes to the destination's Sent folder, "Sent Messages" keeps its name."""
    src = dovecot_factory(users={"src": "srcpass"})
    dst = dovecot_factory(users={"dst": "dstpass"}, special_use={"Sent Items": "\\Sent"})
    dst.deliver_many("dst", "Sent Items", [])
    src.deliver("src", "Sent", msg(1), ("\\Seen",), T0)
    src.deliver("src", "Sent Messages", msg(2), (), T0)
    rep = run_ok(src, dst, tmp_path)
    plan = {f["source"]: f for f in rep["plan"]["folders"]}
    assert plan["Sent"]["dest"] == "Sent Items" and plan["Sent"]["merged_with"] == []
    assert plan["Sent Messages"]["dest"] == "Sent Messages"
    assert any("merged only by a rule" in r for r in plan["Sent Messages"]["reasons"])
    s = mailcheck.snapshot(src.port, "src", "srcpass")
    d = mailcheck.snapshot(dst.port, "dst", "dstpass")
    assert d["Sent Items"] == s["Sent"] and d["Sent Messages"] == s["Sent Messages"]


def test_special_folders_go_to_the_destinations_own(dovecot_factory, tmp_path):
    # Source: "/" and Debian's stock SPECIAL-USE (Sent, "Sent Messages", Drafts, Trash, Junk).
    src = dovecot_factory(users={"src": "srcpass"})
    # Destination: "." with special folders of other names.
    dst = dovecot_factory(
        separator=".",
        users={"dst": "dstpass"},
        special_use={
            "Sent Items": "\\Sent",
            "Deleted Items": "\\Trash",
            "Junk Email": "\\Junk",
            "Drafts": "\\Drafts",
        },
    )
    for f in ("Deleted Items", "Junk Email"):
        dst.deliver_many("dst", f, [])
    own = msg(900, tag="own")
    dst.deliver("dst", "Sent Items", own, ("\\Seen",), T0)  # the user's own mail stays

    n = 0

    def put(folder: str, count: int, flags=("\\Seen",)) -> None:
        nonlocal n
        for _ in range(count):
            n += 1
            src.deliver("src", folder, msg(n), flags, T0)

    put("INBOX", 3)
    put("Sent", 4)
    put("Sent Messages", 2, ())
    put("Drafts", 2, ("\\Draft",))
    put("Trash", 2)
    put("Junk", 1, ("$Junk",))
    put("Work", 2)
    put("Projects/Sent", 1)  # not the Sent folder: an ordinary subfolder
    # Two folders the source marks \Sent are merged only by a rule (issue 12): here the
    # customer asks for it with --rename below.
    # In both merged Sent folders: once in "Sent", twice in "Sent Messages" (same flags),
    # and one with other flags in each (the first folder of the merge, "Sent", wins).
    twin = msg(500, tag="twin")
    src.deliver("src", "Sent", twin, ("\\Seen",), T0)
    src.deliver("src", "Sent Messages", twin, ("\\Seen",), T0)
    src.deliver("src", "Sent Messages", twin, ("\\Seen",), T0)
    other = msg(501, tag="twin")
    src.deliver("src", "Sent", other, ("\\Seen", "\\Answered"), T0)
    src.deliver("src", "Sent Messages", other, (), T0)

    merge = ("--rename", "Sent Messages=Sent Items")
    rep = run_ok(src, dst, tmp_path, *merge)
    s = mailcheck.snapshot(src.port, "src", "srcpass")
    d = mailcheck.snapshot(dst.port, "dst", "dstpass")
    assert "Sent" not in d and "Sent Messages" not in d, sorted(d)
    assert "Trash" not in d and "Junk" not in d, sorted(d)
    own_msg = next(iter(d["Sent Items"] - union_first_wins(s["Sent"], s["Sent Messages"])))
    assert own_msg.size == len(own)
    assert d["Sent Items"] == union_first_wins(s["Sent"], s["Sent Messages"]) + Counter([own_msg])
    assert d["Deleted Items"] == s["Trash"]
    assert d["Junk Email"] == s["Junk"]
    assert d["Drafts"] == s["Drafts"]
    assert d["INBOX"] == s["INBOX"]
    assert d["Work"] == s["Work"]
    assert d["Projects.Sent"] == s["Projects/Sent"]

    plan = {f["source"]: f for f in rep["plan"]["folders"]}
    assert plan["Sent"]["dest"] == plan["Sent Messages"]["dest"] == "Sent Items"
    assert plan["Sent"]["role"] == "sent"
    assert plan["Sent"]["merged_with"] == ["Sent Messages"]
    why = plan["Sent"]["reasons"]
    assert "'Sent Items' is the destination's \\Sent folder (by SPECIAL-USE)" in why
    assert plan["Trash"]["dest"] == "Deleted Items"
    assert plan["Projects/Sent"]["dest"] == "Projects.Sent"
    assert plan["Projects/Sent"]["role"] is None
    folders = {f["source"]: f for f in rep["folders"]}
    assert folders["Sent"]["copied"] == 6  # 4 + twin + other
    assert folders["Sent Messages"]["copied"] == 3  # 2 + the second twin
    assert folders["Sent Messages"]["already_present"] == 2  # twin, other
    assert rep["totals"]["failed"] == 0

    # Re-run: nothing copied, no flags set back and forth.
    rep2 = run_ok(src, dst, tmp_path, *merge)
    assert rep2["totals"]["copied"] == 0
    assert all(f["flags_fixed"] == 0 for f in rep2["folders"]), rep2["folders"]
    assert mailcheck.snapshot(dst.port, "dst", "dstpass") == d
    # ...and without the state file: the destination is the truth.
    rep3 = run_ok(src, dst, tmp_path, *merge, "--state", str(tmp_path / "other.sqlite"))
    assert rep3["totals"]["copied"] == 0
    assert all(f["flags_fixed"] == 0 for f in rep3["folders"]), rep3["folders"]
    assert mailcheck.snapshot(dst.port, "dst", "dstpass") == d


def test_localized_names_without_special_use(dovecot_factory, tmp_path):
    server = dovecot_factory(users={"src": "srcpass", "dst": "dstpass"}, special_use=False)
    mail = [
        ("Sent Items", ("\\Seen",)),
        ("Sent Items", ()),
        ("Deleted Items", ("\\Deleted",)),
        ("Drafts", ("\\Draft",)),
        ("INBOX", ()),
        ("Junk E-mail", ("Junk",)),
    ]
    for i, (folder, flags) in enumerate(mail):
        server.deliver("src", folder, msg(i), flags, T0)
    for folder in ("Gesendete Objekte", "Papierkorb", "Entwürfe"):
        server.deliver_many("dst", folder, [])

    rep = run_ok(server, server, tmp_path)
    s = mailcheck.snapshot(server.port, "src", "srcpass")
    d = mailcheck.snapshot(server.port, "dst", "dstpass")
    assert d[enc("Gesendete Objekte")] == s["Sent Items"]
    assert d["Papierkorb"] == s["Deleted Items"]
    assert d[enc("Entwürfe")] == s["Drafts"]
    # No junk folder on the destination: it keeps its name there.
    assert d["Junk E-mail"] == s["Junk E-mail"]
    assert not {"Sent Items", "Deleted Items", "Drafts", "Sent"} & set(d), sorted(d)
    plan = {f["source"]: f for f in rep["plan"]["folders"]}
    why = plan["Sent Items"]["reasons"]
    assert "'Gesendete Objekte' is the destination's \\Sent folder (by its name)" in why
    assert "'Sent Items' is the source's \\Sent folder (by its name)" in why
    assert any("has no \\Junk folder" in r for r in plan["Junk E-mail"]["reasons"])

    # --no-special keeps the names.
    other = tmp_path / "nospecial"
    other.mkdir()
    rep = run_ok(server, server, other, "--no-special", "--dry-run")
    plan = {f["source"]: f for f in rep["plan"]["folders"]}
    assert plan["Sent Items"]["dest"] == "Sent Items" and plan["Sent Items"]["role"] is None


#: role -> (the source's localized folder it marks by SPECIAL-USE, the English look-alike)
LOCALIZED = {
    "\\Sent": ("Gesendet", "Sent"),
    "\\Drafts": ("Entwürfe", "Drafts"),
    "\\Trash": ("Papierkorb", "Trash"),
    "\\Junk": ("Unerwünscht", "Junk"),
    "\\Archive": ("Archiv", "Archive"),
}


def test_special_use_under_a_localized_name_beside_an_ordinary_english_folder(
    dovecot_factory, tmp_path
):
    # Source: SPECIAL-USE on German names, and ordinary folders with the English names.
    src = dovecot_factory(
        users={"src": "srcpass"},
        special_use={local: attr for attr, (local, _) in LOCALIZED.items()},
    )
    # Destination: "." and its special folders under the English names.
    dst = dovecot_factory(
        separator=".",
        users={"dst": "dstpass"},
        special_use={english: attr for attr, (_, english) in LOCALIZED.items()},
    )
    n = 0
    for attr, (local, english) in LOCALIZED.items():
        for folder, count in ((local, 3), (english, 2)):
            for _ in range(count):
                n += 1
                src.deliver("src", folder, msg(n, tag=f"m{attr[1:]}"), ("\\Seen",), T0)
        dst.deliver_many("dst", english, [])
    # A message in both folders of a pair: still once in each destination folder.
    both = msg(999, tag="both")
    src.deliver("src", "Entwürfe", both, ("\\Draft",), T0)
    src.deliver("src", "Drafts", both, ("\\Draft",), T0)
    src.deliver("src", "Drafts/Old", msg(998), (), T0)
    before = mailcheck.snapshot(src.port, "src", "srcpass")

    dry = tmp_path / "dry"
    dry.mkdir()
    r = move(src, dst, dry, "--dry-run")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "  Drafts -> Drafts (2) [new]: 3 messages" in r.stdout
    assert (
        "      why: named like a drafts folder, but the source marks 'Entwürfe' as \\Drafts "
        "(SPECIAL-USE): kept as an ordinary folder"
    ) in r.stdout
    assert "  Entwürfe -> Drafts: 4 messages" in r.stdout

    rep = run_ok(src, dst, tmp_path)
    s = mailcheck.snapshot(src.port, "src", "srcpass")
    assert s == before  # the source is untouched
    d = mailcheck.snapshot(dst.port, "dst", "dstpass")
    plan = {f["source"]: f for f in rep["plan"]["folders"]}
    for attr, (local, english) in LOCALIZED.items():
        assert d[english] == s[enc(local)], attr  # exactly the marked folder's messages
        assert d[f"{english} (2)"] == s[english], attr  # the look-alike, apart
        assert plan[local]["dest"] == english and plan[local]["role"] == attr[1:].lower()
        assert plan[english]["dest"] == f"{english} (2)" and plan[english]["role"] is None
        assert plan[local]["merged_with"] == plan[english]["merged_with"] == []
        assert any(f"marks {local!r} as {attr}" in w for w in plan[english]["reasons"])
    assert d["Drafts (2).Old"] == s["Drafts/Old"]
    assert rep["totals"]["failed"] == 0

    # Re-run: nothing more.
    rep2 = run_ok(src, dst, tmp_path)
    assert rep2["totals"]["copied"] == 0
    assert mailcheck.snapshot(dst.port, "dst", "dstpass") == d


def test_destination_marks_a_localized_folder_beside_an_ordinary_english_one(
    dovecot_factory, tmp_path
):
    # Source: Dovecot's stock SPECIAL-USE (Drafts, Sent, Trash, Junk marked).
    src = dovecot_factory(users={"src": "srcpass"})
    # Destination: SPECIAL-USE on German names, and ordinary English folders with mail.
    dst = dovecot_factory(
        users={"dst": "dstpass"},
        special_use={local: attr for attr, (local, _) in LOCALIZED.items()},
    )
    n = 0
    for attr, (local, english) in LOCALIZED.items():
        for _ in range(2):
            n += 1
            src.deliver("src", english, msg(n, tag=f"s{attr[1:]}"), ("\\Seen",), T0)
        dst.deliver_many("dst", local, [])
        dst.deliver("dst", english, msg(500 + n, tag="theirs"), (), T0)
    theirs = mailcheck.snapshot(dst.port, "dst", "dstpass")

    rep = run_ok(src, dst, tmp_path)
    s = mailcheck.snapshot(src.port, "src", "srcpass")
    d = mailcheck.snapshot(dst.port, "dst", "dstpass")
    plan = {f["source"]: f for f in rep["plan"]["folders"]}
    for attr, (local, english) in LOCALIZED.items():
        if attr == "\\Archive":
            # The source marks no \\Archive: its "Archive" is found by name and goes to
            # the destination's \\Archive folder.
            assert any("marks no folder as \\Archive" in w for w in plan[english]["reasons"])
        assert d[enc(local)] == s[english], attr
        assert d[english] == theirs[english], attr  # the destination's own, untouched
        assert plan[english]["dest"] == local
    assert rep["totals"]["failed"] == 0


# --------------------------------------------------------------------- folder rules


def test_rename_regex_merge_prefix_and_exclude(dovecot, tmp_path):
    n = 0

    def put(folder: str, count: int, flags=("\\Seen",)) -> None:
        nonlocal n
        for _ in range(count):
            n += 1
            dovecot.deliver("src", folder, msg(n), flags, T0)

    put("INBOX", 2)
    put("Work", 2)
    put("Work/Sub", 1)
    put("Old Work", 2, ())
    put("Archive/2019", 1)
    put("Archive/2020", 1)
    put("Spam", 1)
    put("Sent", 1)
    shared = msg(700, tag="shared")  # in Work and Old Work: copied once
    dovecot.deliver("src", "Work", shared, ("\\Flagged",), T0)
    dovecot.deliver("src", "Old Work", shared, ("\\Flagged",), T0)

    args = [
        "--rename",
        "Old Work=Work",
        "--rename-regex",
        r"Archive/(\d+)=Years/\1",
        "--under",
        "Imported",
        "--exclude",
        "Spam",
    ]
    rep = run_ok(dovecot, dovecot, tmp_path, *args)
    s = mailcheck.snapshot(dovecot.port, "src", "srcpass")
    d = mailcheck.snapshot(dovecot.port, "dst", "dstpass")
    assert set(d) == {
        "INBOX",
        "Sent",
        "Imported/Work",
        "Imported/Work/Sub",
        "Imported/Years/2019",
        "Imported/Years/2020",
    }, sorted(d)
    assert d["INBOX"] == s["INBOX"]
    assert d["Sent"] == s["Sent"]  # a special folder: not under the prefix
    assert d["Imported/Work"] == union_first_wins(s["Work"], s["Old Work"])
    assert sum(d["Imported/Work"].values()) == 2 + 2 + 1
    assert d["Imported/Work/Sub"] == s["Work/Sub"]
    assert d["Imported/Years/2019"] == s["Archive/2019"]
    assert d["Imported/Years/2020"] == s["Archive/2020"]
    plan = {f["source"]: f for f in rep["plan"]["folders"]}
    assert "Spam" not in plan
    assert {"folder": "Spam", "why": "excluded by --folder/--exclude"} in rep["plan"]["skipped"]
    assert plan["Old Work"]["merged_with"] == ["Work"]
    assert "--rename Old Work=Work" in plan["Old Work"]["reasons"]
    assert "--under Imported" in plan["Old Work"]["reasons"]
    assert rep["plan"]["rules"]["under"] == "Imported"

    rep2 = run_ok(dovecot, dovecot, tmp_path, *args)
    assert rep2["totals"]["copied"] == 0
    assert all(f["flags_fixed"] == 0 for f in rep2["folders"])
    assert mailcheck.snapshot(dovecot.port, "dst", "dstpass") == d


def test_bad_rules_and_filters_are_usage_errors(dovecot, tmp_path):
    cases = [
        (["--rename", "NoEquals"], "expected OLD=NEW"),
        (["--rename-regex", "(x=y"], "invalid regular expression"),
        (["--rename-regex", r"(x)=\3"], "invalid replacement"),
        (["--under", "a//b"], "empty path component"),
        (["--under-inbox"], "--under-inbox needs --under"),
        (["--since", "2020-02-30"], "--since"),
        (["--larger", "lots"], "--larger"),
        (["--since", "2021-01-01", "--before", "2020-01-01"], "no message would match"),
    ]
    for args, message in cases:
        r = move(dovecot, dovecot, tmp_path, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr, (args, r.stderr)
    assert not (tmp_path / "state.sqlite").exists()


# --------------------------------------------------------------------- message filters


def test_filters_select_exactly_and_leave_the_rest_alone(dovecot, tmp_path):
    def at(day: str) -> datetime:
        return datetime.fromisoformat(day + "T12:00:00+00:00")

    cases = {  # name: (INTERNALDATE, size, selected?)
        "a": ("2019-12-31", 2000, False),  # before --since
        "b": ("2020-01-01", 2000, True),  # --since is inclusive
        "c": ("2020-12-31", 4999, True),
        "d": ("2021-01-01", 2000, False),  # --before is exclusive
        "e": ("2020-06-01", 1000, False),  # --larger is strict
        "f": ("2020-06-01", 1001, True),
        "g": ("2020-06-01", 5000, False),  # --smaller is strict
    }
    raw = {}
    for i, (name, (day, size, _)) in enumerate(sorted(cases.items())):
        raw[name] = msg(i, size, tag=name)
        dovecot.deliver("src", "INBOX", raw[name], ("\\Seen",), at(day))
    dovecot.deliver("src", "Work", msg(50, 2000, tag="w"), (), at("2010-01-01"))
    # Outside the filter, on both sides with other flags: never touched.
    dovecot.deliver("src", "INBOX", msg(60, 2000, tag="old"), ("\\Seen",), at("2018-01-01"))
    dovecot.deliver("dst", "INBOX", msg(60, 2000, tag="old"), ("\\Flagged",), at("2018-01-01"))
    dovecot.deliver("dst", "INBOX", msg(61, 3000, tag="own"), (), at("2020-06-01"))
    before = mailcheck.snapshot(dovecot.port, "dst", "dstpass")
    args = ["--since", "2020-01-01", "--before", "2021-01-01", "--larger", "1000"]
    args += ["--smaller", "5000"]

    rep = run_ok(dovecot, dovecot, tmp_path, *args, "--dry-run")
    plan = {f["source"]: f for f in rep["plan"]["folders"]}
    assert plan["INBOX"]["messages"] == 3
    assert plan["INBOX"]["bytes"] == 2000 + 4999 + 1001
    assert plan["Work"]["messages"] == 0
    assert rep["plan"]["filters"] == {
        "since": "2020-01-01",
        "before": "2021-01-01",
        "larger": 1000,
        "smaller": 5000,
    }
    assert mailcheck.snapshot(dovecot.port, "dst", "dstpass") == before

    rep = run_ok(dovecot, dovecot, tmp_path, *args)
    s = mailcheck.snapshot(dovecot.port, "src", "srcpass")
    d = mailcheck.snapshot(dovecot.port, "dst", "dstpass")
    selected = {m for m in s["INBOX"] if m.size in (2000, 4999, 1001) and "2020" in m.date}
    assert len(selected) == 3
    assert d["INBOX"] == before["INBOX"] + Counter(selected)
    assert d["Work"] == Counter()  # created, nothing in it matched
    folders = {f["source"]: f for f in rep["folders"]}
    assert folders["INBOX"]["source_count"] == 3 and folders["INBOX"]["copied"] == 3
    assert any("3 of 8 messages match the filter" in n for n in folders["INBOX"]["notes"])

    rep = run_ok(dovecot, dovecot, tmp_path, *args)
    assert rep["totals"]["copied"] == 0 and rep["totals"]["already_present"] == 3
    assert mailcheck.snapshot(dovecot.port, "dst", "dstpass") == d


# --------------------------------------------------------------------- the dry-run plan


def _deny_flag_writes(server, user: str, folder: str) -> None:
    """Dovecot ACL (vfile): the owner may read, insert, set \\Seen and \\Deleted, but
    not write other flags or keywords: PERMANENTFLAGS (\\Deleted \\Seen)."""
    path = server.deliver_many(user, folder, [msg(99, tag="acl")])[0]
    acl = path.parent.parent / "dovecot-acl"
    acl.write_text("owner lrsitekx\n")
    st = os.stat(path.parent.parent)
    os.chown(acl, st.st_uid, st.st_gid)
    acl.chmod(0o644)


def test_dry_run_shows_the_whole_plan_and_changes_nothing(dovecot_factory, tmp_path):
    src = dovecot_factory(users={"src": "srcpass"})
    dst = dovecot_factory(
        users={"dst": "dstpass"},
        special_use={"Sent Items": "\\Sent"},
        extra_config="mail_plugins = $mail_plugins acl\nplugin {\n  acl = vfile\n}\n",
    )
    src.deliver("src", "INBOX", msg(1, 1500), (), T0)
    src.deliver("src", "Sent", msg(2, 1200), ("\\Seen",), T0)
    src.deliver("src", "Work", msg(3, 1000), ("\\Seen", "\\Flagged", "$label"), T0)
    src.deliver("src", "Work", msg(4, 1100), ("\\Seen",), T0)
    src.deliver("src", "New/Folder", msg(5, 1300), (), T0)
    dst.deliver_many("dst", "Sent Items", [])
    _deny_flag_writes(dst, "dst", "Work")
    before = mailcheck.snapshot(dst.port, "dst", "dstpass")
    names_before = folder_names(dst, "dst", "dstpass")

    report = tmp_path / "plan.json"
    r = move(src, dst, tmp_path, "--dry-run", "--report", str(report))
    assert r.returncode == 0, r.stderr + r.stdout
    out = r.stdout
    assert "Plan: 4 folders, 5 messages" in out
    assert "  Sent -> Sent Items: 1 messages" in out
    assert "      why: 'Sent Items' is the destination's \\Sent folder (by SPECIAL-USE)" in out
    assert "  Work -> Work: 2 messages" in out
    # Issue 13 (keywords by evidence): a keyword PERMANENTFLAGS does not promise is no
    # longer predicted "cannot store": the run tries it and reads it back.
    assert "      the destination cannot store: \\Answered, \\Draft, \\Flagged" in out
    assert "kept if it keeps them): $label" in out
    assert "  New/Folder -> New/Folder [new]: 1 messages" in out
    assert "  INBOX -> INBOX: 1 messages" in out

    plan = report_of(report)["plan"]
    folders = {f["source"]: f for f in plan["folders"]}
    assert folders["Work"]["unstorable_flags"] == ["\\Answered", "\\Draft", "\\Flagged"]
    assert folders["Work"]["untested_keywords"] == ["$label"]
    assert folders["Work"]["messages"] == 2 and folders["Work"]["bytes"] == 2100
    assert folders["Work"]["dest_exists"] is True
    assert folders["INBOX"]["unstorable_flags"] == []
    assert folders["New/Folder"]["dest_exists"] is False
    assert folders["New/Folder"]["unstorable_flags"] == []  # judged by INBOX's
    assert folders["Sent"]["role"] == "sent" and folders["Sent"]["dest"] == "Sent Items"
    assert any("the source's \\Sent folder" in w for w in folders["Sent"]["reasons"])
    assert plan["create"] == ["New/Folder"]
    assert plan["total_messages"] == 5 and plan["total_bytes"] == 1500 + 1200 + 2100 + 1300

    # Nothing changed on the destination, and no state file was made.
    assert mailcheck.snapshot(dst.port, "dst", "dstpass") == before
    assert folder_names(dst, "dst", "dstpass") == names_before
    assert not (tmp_path / "state.sqlite").exists()

    # The real run meets what the plan said: the flags it could not keep are reported.
    rep = run_ok(src, dst, tmp_path)
    done = {f["source"]: f for f in rep["folders"]}
    assert set(done["Work"]["unstorable_flags"]) == {"$label", "\\Flagged"}
    assert set(done["Work"]["unstorable_flags"]) <= set(folders["Work"]["unstorable_flags"]) | {
        "$label"
    }
    # Each dropped flag with the number of messages that carried it (by evidence: $label
    # was tried once, on the first message carrying it, and read back without it).
    assert done["Work"]["dropped_flags"] == {"$label": 1, "\\Flagged": 1}
    assert any("$label (1)" in n for n in done["Work"]["notes"]), done["Work"]["notes"]
    d = mailcheck.snapshot(dst.port, "dst", "dstpass")
    copied = [m for m in d["Work"].elements() if m.size in (1000, 1100)]
    assert sorted(m.flags for m in copied) == [("\\Seen",), ("\\Seen",)]
    assert d["Sent Items"] == mailcheck.snapshot(src.port, "src", "srcpass")["Sent"]


# --------------------------------------------------------------------- the service


@pytest.fixture
def make_service(tmp_path):
    """A Service on tmp_path/data (no workers started), closed at teardown."""
    made: list[Service] = []

    def make(**overrides) -> Service:
        svc = Service(Settings.load(tmp_path / "data", **{**FAST, **overrides}))
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.close()


def test_service_folder_step_shows_destination_names_and_reasons(make_service, dovecot_factory):
    src = dovecot_factory(users={"src": "srcpass"})
    dst = dovecot_factory(
        separator=".", users={"dst": "dstpass"}, special_use={"Sent Items": "\\Sent"}
    )
    src.deliver("src", "Sent", msg(1), ("\\Seen",), T0)
    src.deliver("src", "Work/Sub", msg(2), (), T0)
    dst.deliver_many("dst", "Sent Items", [])
    svc = make_service(ca_file=str(src.ca_file))
    source = Account("127.0.0.1", src.port, "starttls", "src", "srcpass")
    dest = Account("127.0.0.1", dst.port, "starttls", "dst", "dstpass")

    alone = {f.name: f for f in asyncio.run(svc.check_account(source, role="source"))}
    assert alone["Sent"].dest_name == "Sent" and alone["Sent"].reasons == ()

    folders = {f.name: f for f in asyncio.run(svc.check_account(source, dest=dest))}
    assert folders["Sent"].dest_name == "Sent Items"
    assert "'Sent Items' is the destination's \\Sent folder (by SPECIAL-USE)" in (
        folders["Sent"].reasons
    )
    assert folders["Work/Sub"].dest_name == "Work.Sub"
    # The web form carries the reasons from step to step.
    plan = folders_to_plan(list(folders.values()))
    assert parse_plan(plan_json(plan)) == plan
    row = next(p for p in plan if p["name"] == "Sent")
    assert row["dest_name"] == "Sent Items" and row["reasons"] == list(folders["Sent"].reasons)


def test_service_folder_step_explains_a_folder_only_named_like_a_special_one(
    make_service, dovecot_factory
):
    src = dovecot_factory(users={"src": "srcpass"}, special_use={"Entwürfe": "\\Drafts"})
    dst = dovecot_factory(users={"dst": "dstpass"})  # Dovecot's stock: "Drafts" is \Drafts
    src.deliver("src", "Entwürfe", msg(1), ("\\Draft",), T0)
    src.deliver("src", "Drafts", msg(2), (), T0)
    dst.deliver_many("dst", "Drafts", [])
    svc = make_service(ca_file=str(src.ca_file))
    source = Account("127.0.0.1", src.port, "starttls", "src", "srcpass")
    dest = Account("127.0.0.1", dst.port, "starttls", "dst", "dstpass")

    folders = {f.name: f for f in asyncio.run(svc.check_account(source, dest=dest))}
    assert folders["Entwürfe"].dest_name == "Drafts"
    assert folders["Drafts"].dest_name == "Drafts (2)"
    assert (
        "named like a drafts folder, but the source marks 'Entwürfe' as \\Drafts "
        "(SPECIAL-USE): kept as an ordinary folder"
    ) in folders["Drafts"].reasons
    plan = folders_to_plan(list(folders.values()))
    row = next(p for p in plan if p["name"] == "Drafts")
    assert row["reasons"] == list(folders["Drafts"].reasons)


def test_service_takes_rules_and_filters(make_service, dovecot):
    svc = make_service(ca_file=str(dovecot.ca_file))
    uid = svc.create_user("rules@example.org", "correct horse battery")
    source = Account("127.0.0.1", dovecot.port, "starttls", "src", "srcpass")
    dest = Account("127.0.0.1", dovecot.port, "starttls", "dst", "dstpass")
    bad = [
        ({"rename": ["NoEquals"]}, "expected OLD=NEW"),
        ({"rename_regex": ["(x=y"]}, "invalid regular expression"),
        ({"since": "2020-02-30"}, "since"),
        ({"larger": "lots"}, "larger"),
        ({"special": "no"}, "special: must be true or false"),
        ({"colour": "red"}, "folders.colour: unknown key"),
    ]
    for folders, message in bad:
        with pytest.raises(ServiceError, match=message):
            svc.create_transfer(uid, source, dest, folders)
    folders = {"exclude": ["Junk"], "rename": ["Work=Jobs"], "since": "2020-01-01", "larger": 10}
    assert FoldersIn(**folders).model_dump() == {"include": [], **folders}
    view = svc.create_transfer(uid, source, dest, FoldersIn(**folders).model_dump())
    assert view.folders == {"include": [], **folders}


def test_job_process_applies_rules_and_filters(dovecot, tmp_path):
    from yippiemove.jobs.jail import run_job

    dovecot.deliver("src", "Work", msg(1), ("\\Seen",), datetime(2021, 5, 5, 12, tzinfo=UTC))
    dovecot.deliver("src", "Work", msg(2), ("\\Seen",), datetime(2019, 5, 5, 12, tzinfo=UTC))
    dovecot.deliver("src", "INBOX", msg(3), (), datetime(2022, 5, 5, 12, tzinfo=UTC))
    account = {"host": "127.0.0.1", "port": dovecot.port, "security": "starttls"}
    spec = {
        "job_id": "rules",
        "source": {**account, "username": "src", "password": "srcpass"},
        "dest": {**account, "username": "dst", "password": "dstpass"},
        "folders": {"rename": ["Work=Jobs"], "since": "2020-01-01", "under": "Old"},
        "ca_file": str(dovecot.ca_file),
        "egress": {"allow": "127.0.0.0/8"},  # the job process's own egress check
    }
    work = tmp_path / "job"
    work.mkdir()
    code, result = run_job(spec, work)
    assert code == 0, result
    s = mailcheck.snapshot(dovecot.port, "src", "srcpass")
    d = mailcheck.snapshot(dovecot.port, "dst", "dstpass")
    assert set(d) == {"INBOX", "Old/Jobs"}
    assert d["INBOX"] == s["INBOX"]
    assert d["Old/Jobs"] == Counter(m for m in s["Work"] if "2021" in m.date)
