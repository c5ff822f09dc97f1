"""policy/gmail.py: which Gmail folders are views, which labels are folders, what is
archived, which destination folders share messages.  Pure functions, no server."""

from __future__ import annotations

import pytest

from yippiemove.imap.gmail import parse_labels
from yippiemove.policy import gmail as g
from yippiemove.policy.folders import Namespace
from yippiemove.policy.special import Box

NS = Namespace("", "/")


def box(name: str, *attrs: str) -> Box:
    return Box(name, frozenset(a.upper() for a in attrs))


# As Gmail lists them (SPECIAL-USE on every LIST answer).
GMAIL = [
    box("INBOX", "\\HasNoChildren"),
    box("Work", "\\HasChildren"),
    box("Work/2024", "\\HasNoChildren"),
    box("Reisen ✈", "\\HasNoChildren"),
    box("[Gmail]", "\\Noselect", "\\HasChildren"),
    box("[Gmail]/All Mail", "\\All", "\\HasNoChildren"),
    box("[Gmail]/Drafts", "\\Drafts", "\\HasNoChildren"),
    box("[Gmail]/Important", "\\Important", "\\HasNoChildren"),
    box("[Gmail]/Sent Mail", "\\Sent", "\\HasNoChildren"),
    box("[Gmail]/Spam", "\\Junk", "\\HasNoChildren"),
    box("[Gmail]/Starred", "\\Flagged", "\\HasNoChildren"),
    box("[Gmail]/Trash", "\\Trash", "\\HasNoChildren"),
]


def test_views_by_attribute() -> None:
    views = g.views(GMAIL, NS)
    assert set(views) == {"[Gmail]/All Mail", "[Gmail]/Important", "[Gmail]/Starred"}
    assert "\\All" in views["[Gmail]/All Mail"]
    assert "\\Flagged flag" in views["[Gmail]/Starred"]
    assert g.all_mail_folder(GMAIL, NS) == "[Gmail]/All Mail"


def test_views_by_name_without_attributes_and_localised() -> None:
    # An old Gmail without SPECIAL-USE, German interface ("[Google Mail]").
    boxes = [
        box("INBOX"),
        box("[Google Mail]/Alle Nachrichten"),
        box("[Google Mail]/Markiert"),
        box("[Google Mail]/Important"),
        box("[Google Mail]/Gesendet"),
        box("Projects/Important"),  # an ordinary label: only under [Gmail] is it a view
        box("Starred"),  # likewise at the top level
    ]
    assert set(g.views(boxes, NS)) == {
        "[Google Mail]/Alle Nachrichten",
        "[Google Mail]/Markiert",
        "[Google Mail]/Important",
    }
    assert g.all_mail_folder(boxes, NS) == "[Google Mail]/Alle Nachrichten"
    assert g.all_mail_folder([box("INBOX"), box("Archive")], NS) is None


def test_folder_labels_are_the_listed_folders() -> None:
    labels = g.folder_labels(GMAIL, NS)
    assert labels == {
        "\\inbox",
        "\\sent",
        "\\draft",
        "\\spam",
        "\\trash",
        "Work",
        "Work/2024",
        "Reisen ✈",
    }


@pytest.mark.parametrize(
    ("labels", "archived"),
    [
        ((), True),
        (("\\Important",), True),
        (("\\Starred",), True),
        (("\\Important", "\\Starred"), True),
        (("\\Inbox",), False),
        (("\\INBOX",), False),  # system labels in any case
        (("\\Sent",), False),
        (("\\Draft",), False),
        (("\\Drafts",), False),  # another spelling of the drafts label
        (("Work/2024", "\\Important"), False),
        (("Reisen ✈",), False),
        (("work",), True),  # user labels compare exactly: "work" is not a folder here
        (("Hidden from IMAP",), True),  # a label without folder: else it would be lost
        (("Hidden from IMAP", "Work"), False),
    ],
)
def test_is_archived(labels: tuple[str, ...], archived: bool) -> None:
    assert g.is_archived(labels, g.folder_labels(GMAIL, NS)) is archived


def test_labels_of_a_fetch_answer_are_decoded() -> None:
    # X-GM-LABELS as the tokenizer gives it: atoms (str) and quoted strings (bytes).
    got = parse_labels(["Work/2024", b"\\Important", b"Reisen &Jwg-", "\\Inbox"])
    assert got == {"Work/2024", "\\Important", "Reisen ✈", "\\Inbox"}
    assert g.is_archived(got, g.folder_labels(GMAIL, NS)) is False
    assert parse_labels([]) == frozenset() and parse_labels(None) == frozenset()


def test_trash_and_spam_never_share_a_gmail_message() -> None:
    assert g.shares_labels({"\\HASNOCHILDREN"}, None)
    assert g.shares_labels(set(), "sent")
    assert g.shares_labels(set(), "archive")
    assert not g.shares_labels({"\\Trash"}, None)
    assert not g.shares_labels({"\\JUNK"}, None)
    assert not g.shares_labels(set(), "trash")  # a folder still to be created
    assert not g.shares_labels(set(), "junk")


def test_archive_reason_names_all_mail() -> None:
    assert "'[Gmail]/All Mail'" in g.archive_reason("[Gmail]/All Mail")
    assert g.ARCHIVE_BOX.attributes == {"\\ARCHIVE"}
