"""Folder rules (rename, regex, merge, prefix, special folders) and message filters."""

from datetime import date

import pytest

from yippiemove.policy.folders import Namespace, map_folders
from yippiemove.policy.rules import (
    FolderRules,
    MessageFilter,
    RuleError,
    parse_date,
    parse_path,
    parse_regex_rename,
    parse_rename,
    parse_size,
    place_folders,
)
from yippiemove.policy.special import Box

SLASH = Namespace("", "/")
DOT = Namespace("", ".")
CYRUS = Namespace("INBOX.", ".")


def boxes(*names: str, sent: str | None = None) -> list[Box]:
    return [Box(n, frozenset({"\\SENT"}) if n == sent else frozenset()) for n in names]


def dests(placements) -> dict[str, str]:
    return {p.source: p.dest for p in placements}


# --- parsing ------------------------------------------------------------------------


def test_parse_rename() -> None:
    r = parse_rename("Old/Work=Jobs/Work")
    assert (r.old, r.new) == (("Old", "Work"), ("Jobs", "Work"))
    r = parse_rename(r"a\=b=c\\d")
    assert (r.old, r.new) == (("a=b",), ("c\\d",))
    assert parse_rename("inbox=Old Inbox").old == ("INBOX",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no-equals", "expected OLD=NEW"),
        ("=New", "empty"),
        ("Old=", "empty"),
        ("Old= ", "empty"),
        ("a//b=c", "empty path component"),
        ("/a=c", "empty path component"),
        ("a=b/", "empty path component"),
    ],
)
def test_bad_renames(text: str, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_rename(text)


def test_parse_regex_rename() -> None:
    r = parse_regex_rename(r"Archive/(\d{4})=Old/\1")
    assert r.pattern.pattern == r"Archive/(\d{4})" and r.replacement == r"Old/\1"
    # "=" inside lookarounds and backreferences belongs to the regex
    r = parse_regex_rename(r"(?=A)(?P<x>A.*)(?<=z)=B/\g<x>")
    assert r.pattern.pattern == "(?=A)(?P<x>A.*)(?<=z)"
    assert parse_regex_rename(r"(?P<n>a)(?P=n)=x").pattern.pattern == "(?P<n>a)(?P=n)"
    assert parse_regex_rename(r"a\=b=c").pattern.fullmatch("a=b")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("(unclosed=x", "invalid regular expression"),
        (r"(a)=\2", "invalid replacement"),
        (r"(a)=\g<name>", "invalid replacement"),
        ("=x", "regular expression is empty"),
        ("a=", "replacement is empty"),
        ("abc", "expected OLD=NEW"),
    ],
)
def test_bad_regex_renames(text: str, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_regex_rename(text)


def test_rules_parse_errors() -> None:
    with pytest.raises(RuleError, match="rename the same folder"):
        FolderRules.parse(renames=["A=B", "A=C"])
    with pytest.raises(RuleError, match="--under-inbox needs --under"):
        FolderRules.parse(under_inbox=True)
    with pytest.raises(RuleError, match="--under"):
        FolderRules.parse(under="a//b")
    assert FolderRules.parse(renames=["A=B", "A=B"]).renames[0].new == ("B",)
    assert parse_path("inbox/x", "t") == ("INBOX", "x")


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("500", 500), ("10k", 10240), ("10K", 10240), ("2M", 2 << 20), ("1G", 1 << 30)],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text, "--larger") == value


@pytest.mark.parametrize("text", ["", "-1", "1.5M", "10 MB", "ten", "10T"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(RuleError, match="--larger"):
        parse_size(text, "--larger")


@pytest.mark.parametrize("text", ["2020-13-01", "2020-02-30", "20-01-01", "1.1.2020", "yesterday"])
def test_bad_dates(text: str) -> None:
    with pytest.raises(RuleError, match="--since"):
        parse_date(text, "--since")


def test_filters() -> None:
    f = MessageFilter.parse(since="2020-01-05", before="2021-12-31", larger="1k", smaller="2M")
    assert f.active
    assert f.criteria() == [
        b"SINCE",
        b"5-Jan-2020",
        b"BEFORE",
        b"31-Dec-2021",
        b"LARGER",
        b"1024",
        b"SMALLER",
        str(2 << 20).encode(),
    ]
    assert f.since == date(2020, 1, 5)
    assert f.as_dict() == {
        "since": "2020-01-05",
        "before": "2021-12-31",
        "larger": 1024,
        "smaller": 2 << 20,
    }
    none = MessageFilter.parse()
    assert not none.active and none.criteria() == [b"ALL"]
    with pytest.raises(RuleError, match="no message would match"):
        MessageFilter.parse(since="2020-01-02", before="2020-01-02")
    with pytest.raises(RuleError, match="no message would match"):
        MessageFilter.parse(larger="10", smaller="11")
    assert MessageFilter.parse(larger="10", smaller="12").criteria()[-1] == b"12"


# --- placing ------------------------------------------------------------------------


def test_exact_rename_moves_subfolders_and_longest_rule_wins() -> None:
    rules = FolderRules.parse(renames=["Work=Jobs", "Work/Secret=Vault"])
    got = place_folders(
        boxes("Work", "Work/a", "Work/Secret", "Work/Secret/x"), SLASH, [], DOT, rules
    )
    assert dests(got) == {
        "Work": "Jobs",
        "Work/a": "Jobs.a",
        "Work/Secret": "Vault",
        "Work/Secret/x": "Vault.x",
    }
    by = {p.source: p for p in got}
    assert "--rename Work=Jobs" in by["Work"].reasons
    assert any("subfolder of 'Work'" in r for r in by["Work/a"].reasons)


def test_rules_use_slash_whatever_the_separators() -> None:
    rules = FolderRules.parse(renames=["Archive/2019=Old/2019"])
    got = place_folders(boxes("INBOX.Archive.2019", "INBOX.Archive"), CYRUS, [], SLASH, rules)
    assert dests(got) == {"INBOX.Archive.2019": "Old/2019", "INBOX.Archive": "Archive"}


def test_regex_rename_first_match_wins_and_exact_beats_regex() -> None:
    rules = FolderRules.parse(
        renames=["Archive/2020=Current"],
        regex_renames=[r"Archive/(\d+)=Years/\1", r"Archive/.*=Never"],
    )
    got = place_folders(boxes("Archive/2019", "Archive/2020", "Archive/x"), SLASH, [], SLASH, rules)
    assert dests(got) == {
        "Archive/2019": "Years/2019",
        "Archive/2020": "Current",
        "Archive/x": "Never",
    }


def test_regex_that_makes_an_empty_name_is_an_error() -> None:
    rules = FolderRules.parse(regex_renames=[r"(.*)/x=\1//y"])
    with pytest.raises(RuleError, match=r"empty path component.*'a/x'"):
        place_folders(boxes("a/x"), SLASH, [], SLASH, rules)


def test_two_folders_renamed_to_one_name_are_merged() -> None:
    rules = FolderRules.parse(renames=["Old Work=Work"])
    got = {p.source: p for p in place_folders(boxes("Work", "Old Work"), SLASH, [], SLASH, rules)}
    assert got["Work"].dest == got["Old Work"].dest == "Work"
    assert got["Work"].merged_with == ("Old Work",)
    assert got["Old Work"].merged_with == ("Work",)
    assert any("merged with 'Old Work'" in r for r in got["Work"].reasons)


def test_translation_collisions_are_not_merged() -> None:
    # "a.b" on a "/" server and "a_b" meet on a "." server only by the "_" fix: kept apart
    got = dests(place_folders(boxes("a.b", "a_b"), SLASH, [], DOT))
    assert sorted(got.values()) == ["a_b", "a_b (2)"]
    # ...even when both are moved by --under
    got = dests(place_folders(boxes("a.b", "a_b"), SLASH, [], DOT, FolderRules.parse(under="I")))
    assert sorted(got.values()) == ["I.a_b", "I.a_b (2)"]


def test_rename_into_the_inbox_merges() -> None:
    rules = FolderRules.parse(renames=["Old Inbox=INBOX"])
    got = dests(place_folders(boxes("INBOX", "Old Inbox"), SLASH, [], DOT, rules))
    assert got == {"INBOX": "INBOX", "Old Inbox": "INBOX"}
    # the inbox itself excluded: the renamed folder still goes to the inbox
    got = dests(place_folders(boxes("Old Inbox"), SLASH, [], DOT, rules))
    assert got == {"Old Inbox": "INBOX"}


def test_under_prefix_keeps_inbox_and_special_folders() -> None:
    src = boxes("INBOX", "INBOX/Child", "Work", "Sent", "Sent/2019", sent="Sent")
    dest = [Box("INBOX"), Box("Sent Items", frozenset({"\\SENT"}))]
    got = dests(place_folders(src, SLASH, dest, DOT, FolderRules.parse(under="Imported")))
    assert got == {
        "INBOX": "INBOX",
        "INBOX/Child": "Imported.INBOX.Child",
        "Work": "Imported.Work",
        "Sent": "Sent Items",
        "Sent/2019": "Sent Items.2019",
    }
    rules = FolderRules.parse(under="Imported", under_inbox=True, special=False)
    got = dests(place_folders(src, SLASH, dest, DOT, rules))
    assert got["INBOX"] == "Imported.INBOX"
    assert got["Sent"] == "Imported.Sent"


def test_precedence_rename_beats_special_and_is_under_the_prefix() -> None:
    src = boxes("Sent", "Gesendet", sent="Sent")
    dest = [Box("Sent Items", frozenset({"\\SENT"}))]
    rules = FolderRules.parse(renames=["Gesendet=Old Sent"], under="Imported")
    got = {p.source: p for p in place_folders(src, SLASH, dest, SLASH, rules)}
    assert got["Sent"].dest == "Sent Items" and got["Sent"].role == "sent"
    assert got["Gesendet"].dest == "Imported/Old Sent" and got["Gesendet"].role is None
    assert got["Sent"].merged_with == ()


def test_no_special_keeps_names() -> None:
    src = boxes("Sent", "Trash", sent="Sent")
    dest = [Box("Sent Items", frozenset({"\\SENT"})), Box("Deleted Items")]
    assert dests(place_folders(src, SLASH, dest, SLASH, FolderRules.parse())) == {
        "Sent": "Sent Items",
        "Trash": "Deleted Items",
    }
    assert dests(place_folders(src, SLASH, dest, SLASH, FolderRules.parse(special=False))) == {
        "Sent": "Sent",
        "Trash": "Trash",
    }


def test_folders_of_one_role_merge_only_by_a_rule() -> None:
    src = boxes("Sent", "Sent Items", "Gesendete Objekte", "INBOX")
    dest = [Box("INBOX"), Box("Sent")]
    got = {p.source: p for p in place_folders(src, SLASH, dest, DOT)}
    assert got["Sent"].dest == "Sent" and got["Sent"].merged_with == ()
    assert got["Sent Items"].dest == "Sent Items"
    assert got["Gesendete Objekte"].dest == "Gesendete Objekte"
    assert any("merged only by a rule" in r for r in got["Sent Items"].reasons)
    rules = FolderRules.parse(renames=["Sent Items=Sent", "Gesendete Objekte=Sent"])
    got = {p.source: p for p in place_folders(src, SLASH, dest, DOT, rules)}
    assert {p.dest for n, p in got.items() if n != "INBOX"} == {"Sent"}
    assert set(got["Sent Items"].merged_with) == {"Sent", "Gesendete Objekte"}


def test_special_folder_created_with_use_when_missing() -> None:
    src = boxes("INBOX.Sent", "INBOX.Work")
    got = {
        p.source: p
        for p in place_folders(src, CYRUS, [Box("INBOX")], SLASH, create_special_use=True)
    }
    assert (got["INBOX.Sent"].dest, got["INBOX.Sent"].create_use) == ("Sent", "\\Sent")
    assert got["INBOX.Work"].create_use is None


def test_separator_and_prefix_changes_are_explained() -> None:
    got = {p.source: p for p in place_folders(boxes("INBOX.A.B", "INBOX.C"), CYRUS, [], SLASH)}
    assert got["INBOX.A.B"].dest == "A/B"
    assert any("hierarchy separator is '/'" in r for r in got["INBOX.A.B"].reasons)
    assert any("namespace prefix is ''" in r for r in got["INBOX.C"].reasons)
    assert not any("hierarchy separator" in r for r in got["INBOX.C"].reasons)


# --- map_folders with targets ------------------------------------------------------------


def test_map_folders_targets_and_merges() -> None:
    got = map_folders(
        ["a", "b", "c", "a/x"],
        SLASH,
        DOT,
        {"b": ("a",), "c": ("z", "y.w")},
    )
    d = {m.source: m for m in got}
    assert d["a"].dest == d["b"].dest == "a"
    assert d["c"].dest == "z.y_w"
    assert d["a/x"].dest == "a.x"
    assert any("merged with 'b'" in r for r in d["a"].reasons)


def test_map_folders_without_targets_is_unchanged() -> None:
    got = map_folders(["INBOX", "inbox/x", "a"], SLASH, CYRUS)
    assert [m.dest for m in got] == ["INBOX", "INBOX.x", "INBOX.a"]


# --- the server's word on special folders wins; never merged without a rule ----------

#: role -> (its attribute, a localized name the server marks, the English look-alike)
MARKED = {
    "sent": ("\\Sent", "Gesendet", "Sent"),
    "drafts": ("\\Drafts", "Entwürfe", "Drafts"),
    "trash": ("\\Trash", "Papierkorb", "Trash"),
    "junk": ("\\Junk", "Unerwünscht", "Junk"),
    "archive": ("\\Archive", "Archiv", "Archive"),
}


def marked(name: str, attr: str) -> Box:
    return Box(name, frozenset({attr.upper()}))


def by_source(placements) -> dict:
    return {p.source: p for p in placements}


@pytest.mark.parametrize("role", sorted(MARKED))
def test_source_lookalike_stays_apart_from_the_marked_folder(role: str) -> None:
    attr, mine, alike = MARKED[role]
    src = [Box("INBOX"), marked(mine, attr), Box(alike), Box(f"{alike}/Old")]
    # The destination's folder of the role has the English name.
    dest = [Box("INBOX"), marked(alike, attr)]
    got = by_source(place_folders(src, SLASH, dest, DOT))
    assert got[mine].dest == alike and got[mine].role == role
    assert got[alike].dest == f"{alike} (2)" and got[alike].role is None
    assert got[f"{alike}/Old"].dest == f"{alike} (2).Old"
    assert all(p.merged_with == () for p in got.values())
    kind = "an archive" if role == "archive" else f"a {role}"
    assert (
        f"named like {kind} folder, but the source marks {mine!r} as {attr} (SPECIAL-USE): "
        "kept as an ordinary folder"
    ) in got[alike].reasons
    assert any(
        f"{alike!r} is where the special folder {mine!r} goes" in r and "kept apart" in r
        for r in got[alike].reasons
    )
    assert f"the source marks it {attr}; {alike!r} only looks like one and stays apart" in (
        got[mine].reasons
    )


@pytest.mark.parametrize("role", sorted(MARKED))
def test_source_lookalike_keeps_its_name_when_the_destination_has_no_such_folder(
    role: str,
) -> None:
    attr, mine, alike = MARKED[role]
    src = [Box("INBOX"), marked(mine, attr), Box(alike)]
    got = by_source(place_folders(src, SLASH, [Box("INBOX")], SLASH, create_special_use=True))
    assert (got[mine].dest, got[mine].create_use) == (mine, attr)
    assert (got[alike].dest, got[alike].role, got[alike].create_use) == (alike, None, None)
    assert got[mine].merged_with == got[alike].merged_with == ()


@pytest.mark.parametrize("role", sorted(MARKED))
def test_destination_lookalike_is_an_ordinary_folder(role: str) -> None:
    attr, theirs, alike = MARKED[role]
    # Source without SPECIAL-USE: its folder is found by name and goes to the folder
    # the destination marks, never to the destination's look-alike.
    dest = [Box("INBOX"), Box(alike), marked(theirs, attr)]
    got = by_source(place_folders([Box("INBOX"), Box(alike)], SLASH, dest, SLASH))
    assert got[alike].dest == theirs and got[alike].role == role
    assert f"the source marks no folder as {attr} (SPECIAL-USE): names decide" in (
        got[alike].reasons
    )
    # Source with SPECIAL-USE: its look-alike goes to the destination's look-alike (the
    # same ordinary name), its marked folder to the destination's marked one.
    src = [Box("INBOX"), Box(alike), marked(f"Mine {role}", attr)]
    got = by_source(place_folders(src, SLASH, dest, SLASH))
    assert got[f"Mine {role}"].dest == theirs
    assert got[alike].dest == alike and got[alike].role is None
    kind = "an archive" if role == "archive" else f"a {role}"
    assert (
        f"{alike!r} on the destination is named like {kind} folder, but the destination "
        f"marks {theirs!r} as {attr} (SPECIAL-USE): kept as an ordinary folder"
    ) in got[alike].reasons


def test_chosen_folders_see_the_marks_of_the_whole_source() -> None:
    # --folder Drafts: the marked "Entwürfe" is not chosen, but the server still marks it.
    everything = [Box("INBOX"), marked("Entwürfe", "\\Drafts"), Box("Drafts")]
    dest = [Box("INBOX"), marked("Brouillons", "\\Drafts")]
    got = by_source(place_folders([Box("Drafts")], SLASH, dest, SLASH, source_boxes=everything))
    assert got["Drafts"].dest == "Drafts" and got["Drafts"].role is None
    got = by_source(place_folders([Box("Drafts")], SLASH, dest, SLASH))
    assert got["Drafts"].dest == "Brouillons"  # nothing known of the server: by name


def test_kept_apart_name_avoids_the_sources_names_and_is_stable() -> None:
    src = [marked("Entwürfe", "\\Drafts"), Box("Drafts"), Box("Drafts (2)")]
    dest = [marked("Drafts", "\\Drafts")]
    got = dests(place_folders(src, SLASH, dest, SLASH))
    assert got == {"Entwürfe": "Drafts", "Drafts": "Drafts (3)", "Drafts (2)": "Drafts (2)"}
    # A re-run finds the folder it made on the destination and chooses it again.
    again = dests(place_folders(src, SLASH, [*dest, Box("Drafts (2)"), Box("Drafts (3)")], SLASH))
    assert again == got


def test_a_rule_may_merge_the_lookalike() -> None:
    src = [marked("Entwürfe", "\\Drafts"), Box("Drafts")]
    dest = [marked("Drafts", "\\Drafts")]
    rules = FolderRules.parse(renames=["Drafts=Drafts"])
    got = by_source(place_folders(src, SLASH, dest, SLASH, rules))
    assert got["Entwürfe"].dest == got["Drafts"].dest == "Drafts"
    assert got["Drafts"].merged_with == ("Entwürfe",)


def test_an_ordinary_folder_named_like_the_destinations_special_folder_stays_apart() -> None:
    # Not a look-alike at all: the destination's \Sent is "Outgoing", the source has a
    # folder "Outgoing" of its own beside its \Sent.
    src = [marked("Sent", "\\Sent"), Box("Outgoing")]
    dest = [marked("Outgoing", "\\Sent")]
    got = by_source(place_folders(src, SLASH, dest, SLASH))
    assert got["Sent"].dest == "Outgoing"
    assert got["Outgoing"].dest == "Outgoing (2)"
    assert got["Sent"].merged_with == got["Outgoing"].merged_with == ()


def test_gmail_xlist_attributes_count() -> None:
    src = [Box("[Gmail]/Spam", frozenset({"\\SPAM"})), Box("Junk")]
    got = by_source(place_folders(src, SLASH, [marked("Junk", "\\Junk")], SLASH))
    assert got["[Gmail]/Spam"].dest == "Junk" and got["[Gmail]/Spam"].role == "junk"
    assert got["Junk"].dest == "Junk (2)" and got["Junk"].role is None
