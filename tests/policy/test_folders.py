"""Tests for folder-name mapping (RFC 3501 section 5.1, RFC 2342)."""

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from yippiemove.policy.folders import (
    FolderMapping,
    Namespace,
    join_name,
    map_folders,
    parents,
    split_name,
)

DOVECOT = Namespace("", "/")  # prefix "", "/" separator
DOVECOT_DOT = Namespace("", ".")  # Dovecot maildir layout
CYRUS = Namespace("INBOX.", ".")  # Cyrus, Courier
CYRUS_SLASH = Namespace("INBOX/", "/")  # Cyrus with unixhierarchysep
FLAT = Namespace("", None)
MAIL = Namespace("Mail/", "/")  # prefix not rooted at INBOX
EMOJI = "\N{GRINNING FACE}"


def dests(sources: list[str], src: Namespace, dst: Namespace) -> list[str]:
    return [m.dest for m in map_folders(sources, src, dst)]


# --- Namespace --------------------------------------------------------------


def test_namespace_defaults() -> None:
    assert Namespace() == Namespace("", "/")


def test_namespace_prefix_gets_trailing_separator() -> None:
    assert Namespace("INBOX", ".").prefix == "INBOX."
    assert Namespace("INBOX.", ".").prefix == "INBOX."
    assert Namespace("weird", None).prefix == "weird"


@pytest.mark.parametrize("separator", ["", "//"])
def test_namespace_rejects_bad_separator(separator: str) -> None:
    with pytest.raises(ValueError, match="one character"):
        Namespace("", separator)


# --- split_name / join_name --------------------------------------------------

SPLIT: list[tuple[str, Namespace, tuple[str, ...]]] = [
    ("INBOX", DOVECOT, ("INBOX",)),
    ("inbox", DOVECOT, ("INBOX",)),
    ("InBoX", CYRUS, ("INBOX",)),
    ("INBOX", CYRUS, ("INBOX",)),
    ("INBOX/child", DOVECOT, ("INBOX", "child")),
    ("Inbox/child", DOVECOT, ("INBOX", "child")),
    ("Sent", DOVECOT, ("Sent",)),
    ("INBOX.Sent", CYRUS, ("Sent",)),
    ("inbox.Sent", CYRUS, ("Sent",)),  # INBOX in the prefix is case-insensitive
    ("INBOX/Sent", CYRUS_SLASH, ("Sent",)),
    ("a/b/c/d", DOVECOT, ("a", "b", "c", "d")),
    ("INBOX.a.b.c.d", CYRUS, ("a", "b", "c", "d")),
    ("a.b/c", DOVECOT, ("a.b", "c")),
    ("a.b/c", DOVECOT_DOT, ("a", "b/c")),
    ("a/b.c", FLAT, ("a/b.c",)),
    ("user.bob.x", CYRUS, ("user", "bob", "x")),  # outside the prefix: kept whole
    ("Mail/x/y", MAIL, ("x", "y")),
    ("INBOX/x", MAIL, ("INBOX", "x")),
    ("Tom & Jerry/" + EMOJI, DOVECOT, ("Tom & Jerry", EMOJI)),
    ("a//b", DOVECOT, ("a", "", "b")),
]


@pytest.mark.parametrize(("name", "ns", "parts"), SPLIT)
def test_split_name(name: str, ns: Namespace, parts: tuple[str, ...]) -> None:
    assert split_name(name, ns) == parts


@pytest.mark.parametrize("name", ["", "INBOX."])
def test_split_name_rejects_root(name: str) -> None:
    with pytest.raises(ValueError, match="not a folder"):
        split_name(name, CYRUS if name else DOVECOT)


JOIN: list[tuple[tuple[str, ...], Namespace, str]] = [
    (("INBOX",), DOVECOT, "INBOX"),
    (("INBOX",), CYRUS, "INBOX"),  # the inbox never gets the prefix
    (("INBOX",), MAIL, "INBOX"),
    (("inbox",), CYRUS, "INBOX"),
    (("INBOX", "child"), DOVECOT, "INBOX/child"),
    (("INBOX", "child"), CYRUS, "INBOX.child"),  # INBOX's children are the top level
    (("INBOX", "child"), MAIL, "INBOX/child"),  # no prefix under INBOX
    (("INBOX", "child"), FLAT, "INBOX/child"),
    (("child",), CYRUS, "INBOX.child"),
    (("Sent",), DOVECOT, "Sent"),
    (("a", "b", "c", "d"), CYRUS, "INBOX.a.b.c.d"),
    (("a", "b", "c", "d"), CYRUS_SLASH, "INBOX/a/b/c/d"),
    (("a", "b"), MAIL, "Mail/a/b"),
    (("a", "b"), FLAT, "a/b"),
    (("a.b",), DOVECOT, "a.b"),
]


@pytest.mark.parametrize(("parts", "ns", "name"), JOIN)
def test_join_name(parts: tuple[str, ...], ns: Namespace, name: str) -> None:
    assert join_name(parts, ns) == name


def test_join_name_rejects_separator_in_component() -> None:
    with pytest.raises(ValueError, match="separator"):
        join_name(("a.b",), CYRUS)


def test_join_name_rejects_no_parts() -> None:
    with pytest.raises(ValueError):
        join_name((), DOVECOT)


@pytest.mark.parametrize(
    ("name", "ns"),
    [
        ("INBOX", DOVECOT),
        ("INBOX/child/x", DOVECOT),
        ("a/b/c/d", DOVECOT),
        ("INBOX.a.b", CYRUS),
        ("INBOX", CYRUS),
        ("Mail/a/b", MAIL),
        ("a/b", FLAT),
        ("Éléments envoyés/&/" + EMOJI, DOVECOT),
    ],
)
def test_split_join_round_trip(name: str, ns: Namespace) -> None:
    assert join_name(split_name(name, ns), ns) == name


# --- parents -----------------------------------------------------------------

PARENTS: list[tuple[str, Namespace, list[str]]] = [
    ("a", DOVECOT, []),
    ("a/b/c/d", DOVECOT, ["a", "a/b", "a/b/c"]),
    ("INBOX.a.b.c", CYRUS, ["INBOX.a", "INBOX.a.b"]),  # not the prefix, not INBOX
    ("INBOX.a", CYRUS, []),
    ("INBOX/a/b", DOVECOT, ["INBOX/a"]),  # INBOX always exists
    ("inbox/a/b", DOVECOT, ["inbox/a"]),
    ("INBOX", DOVECOT, []),
    ("INBOX", CYRUS, []),
    ("Mail/a/b", MAIL, ["Mail/a"]),
    ("a/b/c", FLAT, []),
    ("user.bob.x", CYRUS, ["user", "user.bob"]),
]


@pytest.mark.parametrize(("name", "ns", "expected"), PARENTS)
def test_parents(name: str, ns: Namespace, expected: list[str]) -> None:
    assert parents(name, ns) == expected


# --- map_folders: plain translations -------------------------------------------

PLAIN: list[tuple[Namespace, Namespace, str, str]] = [
    # "/" -> "."
    (DOVECOT, DOVECOT_DOT, "a/b", "a.b"),
    (DOVECOT, DOVECOT_DOT, "a/b/c/d", "a.b.c.d"),
    # "." -> "/"
    (DOVECOT_DOT, DOVECOT, "a.b", "a/b"),
    (DOVECOT_DOT, DOVECOT, "a.b.c.d", "a/b/c/d"),
    # prefix "INBOX." <-> ""
    (CYRUS, DOVECOT, "INBOX", "INBOX"),
    (CYRUS, DOVECOT, "INBOX.Sent", "Sent"),
    (CYRUS, DOVECOT, "INBOX.a.b.c.d", "a/b/c/d"),
    (DOVECOT, CYRUS, "INBOX", "INBOX"),
    (DOVECOT, CYRUS, "Sent", "INBOX.Sent"),
    (DOVECOT, CYRUS, "a/b/c/d", "INBOX.a.b.c.d"),
    (CYRUS, DOVECOT_DOT, "INBOX.a.b", "a.b"),
    (CYRUS, CYRUS_SLASH, "INBOX.a.b", "INBOX/a/b"),
    (CYRUS_SLASH, CYRUS, "INBOX/a/b", "INBOX.a.b"),
    (MAIL, CYRUS, "Mail/a/b", "INBOX.a.b"),
    (CYRUS, MAIL, "INBOX.a.b", "Mail/a/b"),
    (MAIL, DOVECOT, "INBOX/x", "INBOX/x"),
    (DOVECOT, MAIL, "INBOX/x", "INBOX/x"),
    # encoding is another layer: these pass through unchanged
    (DOVECOT, CYRUS, "Tom & Jerry", "INBOX.Tom & Jerry"),
    (DOVECOT, CYRUS, "Éléments envoyés/台北", "INBOX.Éléments envoyés.台北"),
    (CYRUS, DOVECOT, f"INBOX.{EMOJI}.&-", f"{EMOJI}/&-"),
    (DOVECOT, DOVECOT, " leading and trailing ", " leading and trailing "),
    (FLAT, FLAT, "a/b.c", "a/b.c"),
    (FLAT, DOVECOT_DOT, "Gesendete Objekte", "Gesendete Objekte"),
]


@pytest.mark.parametrize(("src", "dst", "source", "dest"), PLAIN)
def test_plain_translation(src: Namespace, dst: Namespace, source: str, dest: str) -> None:
    assert map_folders([source], src, dst) == [FolderMapping(source, dest, ())]


# --- map_folders: changes with reasons ------------------------------------------

CHANGED: list[tuple[Namespace, Namespace, str, str, str]] = [
    # a component containing the destination's separator
    (DOVECOT, DOVECOT_DOT, "v1.2/notes", "v1_2.notes", "'.' is the destination's hierarchy"),
    (DOVECOT, CYRUS, "v1.2", "INBOX.v1_2", "'.' is the destination's hierarchy"),
    (DOVECOT_DOT, DOVECOT, "a/b.c", "a_b/c", "'/' is the destination's hierarchy"),
    (CYRUS, DOVECOT, "INBOX.and/or", "and_or", "'/' is the destination's hierarchy"),
    (FLAT, DOVECOT, "a/b", "a_b", "'/' is the destination's hierarchy"),
    (Namespace("", "."), Namespace("", "_"), "a_b.c", "a-b_c", "'_' is the destination's"),
    # children of INBOX on an "INBOX." destination
    (DOVECOT, CYRUS, "INBOX/child", "INBOX.child", "children of INBOX are top-level"),
    (DOVECOT, CYRUS, "INBOX/a/b", "INBOX.a.b", "children of INBOX are top-level"),
    # INBOX spelling
    (DOVECOT, DOVECOT, "inbox", "INBOX", "case-insensitive"),
    (DOVECOT, CYRUS, "Inbox", "INBOX", "case-insensitive"),
    (DOVECOT, DOVECOT, "Inbox/x", "INBOX/x", "case-insensitive"),
    # flat destination
    (DOVECOT, FLAT, "a/b/c", "a/b/c", "no hierarchy"),
    (CYRUS, FLAT, "INBOX.a.b", "a/b", "no hierarchy"),
    (DOVECOT_DOT, FLAT, "a/b.c", "a_b/c", "joiner of components"),
    # unsafe components
    (DOVECOT, DOVECOT, "a//b", "a/_/b", "empty path component"),
    (DOVECOT, DOVECOT, "a/./b", "a/_/b", "not a valid path component"),
    (DOVECOT, DOVECOT, "../x", "__/x", "not a valid path component"),
    (DOVECOT_DOT, DOVECOT, "a..b", "a/_/b", "empty path component"),
    # outside the personal namespace
    (CYRUS, DOVECOT, "user.bob.x", "user/bob/x", "not under the source personal namespace"),
]


@pytest.mark.parametrize(("src", "dst", "source", "dest", "reason"), CHANGED)
def test_changed_with_reason(
    src: Namespace, dst: Namespace, source: str, dest: str, reason: str
) -> None:
    [mapping] = map_folders([source], src, dst)
    assert mapping.dest == dest
    assert any(reason in r for r in mapping.reasons), mapping.reasons


# --- map_folders: collisions ---------------------------------------------------


def test_inbox_children_collide_with_top_level_on_cyrus() -> None:
    sources = ["INBOX", "INBOX/child", "INBOX/child/x", "child", "child/x"]
    result = map_folders(sources, DOVECOT, CYRUS)
    assert [m.dest for m in result] == [
        "INBOX",
        "INBOX.child (2)",  # the faithfully mapped top-level "child" keeps its name
        "INBOX.child (2).x",  # and the subtree follows its renamed parent
        "INBOX.child",
        "INBOX.child.x",
    ]
    assert result[3].reasons == ()
    assert any("already the destination of 'child'" in r for r in result[1].reasons)
    assert any("parent 'INBOX/child' was renamed" in r for r in result[2].reasons)


def test_separator_replacement_collides_with_real_name() -> None:
    sources = ["INBOX.a/b", "INBOX.a_b"]
    result = map_folders(sources, CYRUS, DOVECOT)
    assert [m.dest for m in result] == ["a_b (2)", "a_b"]
    assert any("renamed to 'a_b (2)'" in r for r in result[0].reasons)
    assert result[1].reasons == ()


def test_collision_order_is_by_code_point() -> None:
    # both are changed (empty and "." components) and both want "a._"
    sources = ["a/.", "a/"]
    result = map_folders(sources, DOVECOT, DOVECOT_DOT)
    assert [m.dest for m in result] == ["a._ (2)", "a._"]
    assert dests(list(reversed(sources)), DOVECOT, DOVECOT_DOT) == ["a._", "a._ (2)"]


def test_unchanged_name_beats_changed_one() -> None:
    # "x/y" is one component on a "." server and stays "x/y" on a flat one;
    # ("x", "y") is joined with "/" and has to give way
    result = map_folders(["x.y", "x/y"], DOVECOT_DOT, FLAT)
    assert [m.dest for m in result] == ["x/y (2)", "x/y"]
    assert result[1].reasons == ()


def test_suffix_skips_names_in_use() -> None:
    sources = ["INBOX.a/b", "INBOX.a_b", "INBOX.a_b (2)", "INBOX.a_b (3).child"]
    assert dests(sources, CYRUS, DOVECOT) == ["a_b (4)", "a_b", "a_b (2)", "a_b (3)/child"]


def test_suffix_on_deep_leaf() -> None:
    sources = ["p.q.r/s", "p.q.r_s"]
    assert dests(sources, DOVECOT_DOT, DOVECOT) == ["p/q/r_s (2)", "p/q/r_s"]


def test_inbox_case_variants() -> None:
    sources = ["Inbox", "INBOX", "inbox/x"]
    result = map_folders(sources, DOVECOT, DOVECOT)
    assert [m.dest for m in result] == ["INBOX (2)", "INBOX", "INBOX/x"]
    assert any("already the destination of 'INBOX'" in r for r in result[0].reasons)


def test_inbox_variant_alone_is_the_inbox() -> None:
    assert dests(["inbox"], DOVECOT, CYRUS) == ["INBOX"]


def test_other_folders_never_take_inbox() -> None:
    # "INBOX.INBOX" on Cyrus is a child folder named INBOX, not the inbox
    result = map_folders(["INBOX.INBOX", "INBOX.INBOX.x"], CYRUS, DOVECOT)
    assert [m.dest for m in result] == ["INBOX (2)", "INBOX (2)/x"]
    assert any("reserved for the inbox" in r for r in result[0].reasons)
    assert dests(["INBOX", "INBOX.INBOX"], CYRUS, CYRUS) == ["INBOX", "INBOX.INBOX (2)"]


def test_case_sensitive_outside_inbox() -> None:
    sources = ["Sent", "sent", "SENT"]
    assert dests(sources, DOVECOT, CYRUS) == ["INBOX.Sent", "INBOX.sent", "INBOX.SENT"]


def test_flat_destination_collision() -> None:
    sources = ["a/b", "INBOX.a.b"]
    result = map_folders(sources, FLAT, FLAT)
    assert [m.dest for m in result] == ["a/b", "INBOX.a.b"]
    result = map_folders(["INBOX.a/b", "INBOX.a.b"], CYRUS, FLAT)
    assert [m.dest for m in result] == ["a/b", "a/b (2)"]


def test_output_order_and_completeness() -> None:
    sources = ["z", "INBOX", "a/b/c/d", "a", "a/b"]
    result = map_folders(sources, DOVECOT, CYRUS)
    assert [m.source for m in result] == sources
    assert [m.dest for m in result] == [
        "INBOX.z",
        "INBOX",
        "INBOX.a.b.c.d",
        "INBOX.a",
        "INBOX.a.b",
    ]


def test_duplicate_sources_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        map_folders(["a", "b", "a"], DOVECOT, CYRUS)


def test_empty_input() -> None:
    assert map_folders([], DOVECOT, CYRUS) == []


def test_mapping_is_frozen() -> None:
    mapping = FolderMapping("a", "b")
    with pytest.raises(AttributeError):
        mapping.dest = "c"  # type: ignore[misc]


# --- properties -----------------------------------------------------------------

NAMESPACES = [DOVECOT, DOVECOT_DOT, CYRUS, CYRUS_SLASH, FLAT, MAIL]
component = st.text(alphabet="ab./_ &é" + EMOJI, min_size=0, max_size=4)
source_names = st.lists(
    st.one_of(
        st.sampled_from(["INBOX", "inbox", "INBOX.x", "INBOX/x", "Mail/x", "a", "a/b"]),
        st.lists(component, min_size=1, max_size=4).map("/".join),
        st.lists(component, min_size=1, max_size=4).map(".".join),
    ),
    max_size=12,
    unique=True,
)


@given(source_names, st.sampled_from(NAMESPACES), st.sampled_from(NAMESPACES))
def test_mapping_is_complete_and_injective(
    sources: list[str], src: Namespace, dst: Namespace
) -> None:
    valid = []
    for name in sources:
        try:
            split_name(name, src)
        except ValueError:
            continue
        valid.append(name)
    result = map_folders(valid, src, dst)
    assert [m.source for m in result] == valid
    keys = ["INBOX" if m.dest.upper() == "INBOX" else m.dest for m in result]
    assert len(set(keys)) == len(keys)
    for m in result:
        if m.dest.upper() == "INBOX":
            assert m.source.upper() == "INBOX"
        if dst.prefix and m.dest != "INBOX":
            assert m.dest.startswith((dst.prefix, f"INBOX{dst.separator}"))
        # every destination name is a safe, canonical name on the destination
        parts = split_name(m.dest, dst)
        assert join_name(parts, dst) == m.dest
        if dst.separator is not None:
            assert all(p not in ("", ".", "..") for p in parts)


clean_component = st.text(
    alphabet=st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="/."),
    min_size=1,
).filter(lambda c: c.upper() != "INBOX")


@given(st.lists(st.lists(clean_component, min_size=1, max_size=4), max_size=8))
def test_round_trip_between_dovecot_and_cyrus(paths: list[list[str]]) -> None:
    names = sorted({"/".join(p) for p in paths})
    there = map_folders(names, DOVECOT, CYRUS)
    assert all(m.reasons == () for m in there)
    back = map_folders([m.dest for m in there], CYRUS, DOVECOT)
    assert [m.dest for m in back] == names
    assert all(m.reasons == () for m in back)


@given(st.lists(st.lists(clean_component, min_size=1, max_size=4), max_size=8))
def test_same_namespace_is_identity(paths: list[list[str]]) -> None:
    names = sorted({"/".join(p) for p in paths})
    assume(names)
    result = map_folders(names, DOVECOT, DOVECOT)
    assert [m.dest for m in result] == names
    assert all(m.reasons == () for m in result)
