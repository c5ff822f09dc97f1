"""Keywords by evidence (transfer/keywords.py): pure decisions."""

from __future__ import annotations

from yippiemove.imap.client import MessageMeta, SelectInfo
from yippiemove.transfer.keywords import Keywords

SYSTEM = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")


def info(perm: tuple[str, ...]) -> SelectInfo:
    return SelectInfo(0, 1, 1, (*SYSTEM, "$Old"), perm, False)


def meta(uid: int, *flags: str) -> MessageMeta:
    return MessageMeta(uid, 100, flags, b"01-Jan-2024 00:00:00 +0000", None)


def test_star_promises_every_keyword() -> None:
    kw = Keywords(info((*SYSTEM, "\\*")))
    assert kw.storable("$Label1") and not kw.pending(("$Label1",))
    assert kw.verdict is None and not kw.dropped([meta(1, "$Label1")])


def test_without_star_a_keyword_is_tried_once_and_the_evidence_decides() -> None:
    kw = Keywords(info(SYSTEM))
    assert kw.unpromised("$Label1") and not kw.unpromised("\\Seen")
    assert kw.pending(("\\Seen", "$Label1")) and not kw.pending(("\\Seen",))
    assert kw.storable("$Label1")  # tried: the probe carries it
    kw.learn(("\\Seen", "$Label1", "Work"), ("\\Seen", "$label1", "Work"))
    assert kw.verdict is True and not kw.pending(("$Other",))
    assert kw.storable("$Other") and kw.storable("$LABEL1")
    assert not kw.dropped([meta(1, "$Label1", "\\Seen"), meta(2, "$Other")])


def test_a_folder_that_drops_keywords_reports_each_with_its_count() -> None:
    kw = Keywords(info(SYSTEM))
    kw.learn(("$Label1",), ("\\Seen",))
    assert kw.verdict is False and not kw.storable("$Label1") and not kw.storable("$Other")
    msgs = [meta(1, "$Label1", "\\Seen"), meta(2, "$Label1", "$Other"), meta(3, "\\Recent")]
    assert kw.dropped(msgs) == {"$Label1": 2, "$Other": 1}


def test_some_kept_some_dropped() -> None:
    kw = Keywords(info(SYSTEM))
    kw.learn(("$A", "$B"), ("$A",))
    assert kw.verdict is True and kw.storable("$A") and not kw.storable("$B")
    assert kw.storable("$C")  # the folder keeps keywords: a new one is expected kept


def test_the_destination_folder_own_messages_are_evidence() -> None:
    kw = Keywords(info(SYSTEM), [meta(1, "\\Seen"), meta(2, "$Seen_Elsewhere")])
    assert kw.verdict is True and not kw.pending(("$Label1",))
    kw = Keywords(info(SYSTEM), [meta(1, "\\Seen", "$Old")])  # only what FLAGS listed...
    assert kw.verdict is True  # ...but not PERMANENTFLAGS: it was stored, so it is evidence


def test_refused_append_with_keywords_means_not_kept() -> None:
    kw = Keywords(info(SYSTEM))
    kw.refused(("\\Seen", "$Label1"))
    assert kw.verdict is False and not kw.storable("$Label1") and kw.storable("\\Seen")


def test_system_flags_follow_permanentflags() -> None:
    kw = Keywords(info(("\\Seen", "\\Deleted")))
    assert not kw.storable("\\Flagged") and not kw.pending(("\\Flagged",))
    assert kw.dropped([meta(1, "\\Flagged", "\\Seen")]) == {"\\Flagged": 1}


def test_permanentflags_listing_a_keyword_promises_it() -> None:
    kw = Keywords(info((*SYSTEM, "$Forwarded")))
    assert kw.storable("$Forwarded") and not kw.unpromised("$Forwarded")
    assert kw.unpromised("$Label1")
