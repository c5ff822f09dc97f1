"""The folder step's ticks, turned into include/exclude, select exactly the ticked folders
when the mover applies them (transfer/engine.py: select_folders)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yippiemove.imap.client import MailboxInfo
from yippiemove.transfer.engine import select_folders
from yippiemove.web.selection import (
    display_pattern,
    exact_pattern,
    selection_to_folders,
)


def boxes(names: list[str], sep: str) -> list[MailboxInfo]:
    return [MailboxInfo(n.encode(), n, sep, frozenset()) for n in names]


def chosen(names: list[str], sep: str, ticked: set[str]) -> set[str]:
    spec = selection_to_folders(names, ticked)
    if spec is None:
        return set(names)
    got = select_folders(boxes(names, sep), spec["include"], spec["exclude"])
    return {m.name for m in got}


TREE = [
    "INBOX",
    "INBOX/Sub",
    "Archive",
    "Archive/2019",
    "Archive/2019/Q1",
    "Archive/2020",
    "Sent",
    "Archived",
]


@pytest.mark.parametrize(
    "ticked",
    [
        set(TREE),
        {"INBOX"},
        {"Archive"},
        {"Archive/2019"},
        {"Archive", "Archive/2019/Q1"},
        set(TREE) - {"Archive/2019"},
        set(TREE) - {"Archive"},
        set(TREE) - {"INBOX"},
        {"Archived"},
    ],
)
def test_examples(ticked: set[str]) -> None:
    assert chosen(TREE, "/", ticked) == ticked


def test_plain_names_when_they_are_safe() -> None:
    assert selection_to_folders(TREE, set(TREE) - {"Sent"}) == {"include": [], "exclude": ["Sent"]}
    assert selection_to_folders(TREE, {"Sent"}) == {"include": ["Sent"], "exclude": []}
    # Leaving out a parent whose children stay: only the parent itself.
    spec = selection_to_folders(TREE, set(TREE) - {"Archive"})
    assert spec == {"include": [], "exclude": ["[A]rchive"]}


def test_nothing_or_unknown_is_an_error() -> None:
    with pytest.raises(ValueError):
        selection_to_folders(TREE, set())
    with pytest.raises(ValueError):
        selection_to_folders(TREE, {"Nope"})


@pytest.mark.parametrize("name", ["Archive", "a*b", "[x]", "Q?", "INBOX", "x/y.z", "Ünïcode ☃"])
def test_exact_pattern_round_trip(name: str) -> None:
    assert display_pattern(exact_pattern(name)) == name or "[" in name


_segment = st.sampled_from(["INBOX", "inbox", "A", "Ab", "B", "a*", "[x]", "Q?", "x y", "Ä"])


@st.composite
def trees(draw: st.DrawFn) -> tuple[list[str], str, set[str]]:
    sep = draw(st.sampled_from(["/", "."]))
    paths = draw(st.lists(st.lists(_segment, min_size=1, max_size=3), min_size=1, max_size=10))
    names = list(dict.fromkeys(sep.join(p) for p in paths))
    # IMAP has one INBOX: drop case variants of it.
    seen_inbox = False
    unique = []
    for n in names:
        if n.upper() == "INBOX":
            if seen_inbox:
                continue
            seen_inbox = True
        unique.append(n)
    ticked = draw(st.sets(st.sampled_from(unique), min_size=1))
    return unique, sep, ticked


@settings(max_examples=400, deadline=None)
@given(trees())
def test_any_selection_is_exact(tree: tuple[list[str], str, set[str]]) -> None:
    names, sep, ticked = tree
    assert chosen(names, sep, ticked) == ticked
