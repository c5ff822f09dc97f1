"""Verification from fixtures: transfer/verify.py's check() and compare_content() are
pure, so every verdict is tested here without a server (tests/transfer/test_verify.py
checks the same against a real Dovecot)."""

from __future__ import annotations

from yippiemove.imap.client import MessageMeta
from yippiemove.transfer.verify import check, compare_content

DATE = b"01-Jan-2020 10:00:00 +0000"


def meta(
    uid: int, size: int, flags: tuple[str, ...] = (), date: bytes = DATE, mid: bytes | None = None
) -> MessageMeta:
    return MessageMeta(uid, size, flags, date, mid)


def every(flag: str) -> bool:
    return True


def test_a_message_with_its_own_copy_is_verified() -> None:
    src = [meta(1, 100, ("\\Seen", "$label1"))]
    dst = {10: meta(10, 100, ("$label1", "\\Seen", "\\Recent"))}
    out = check("INBOX", src, {1: 10}, dst, set(), every)
    assert out.verified == 1 and not out.failures and not out.set_flags and not out.notes
    assert [(m.uid, d) for m, d in out.verified_pairs] == [(1, 10)]


def test_missing_and_unclaimed_messages_fail_with_their_message_id() -> None:
    src = [meta(1, 100, mid=b"<a@x>"), meta(2, 100)]
    out = check("INBOX", src, {1: 10}, {}, set(), every)
    assert [(f.uid, f.message_id, f.reason) for f in out.failures] == [
        (1, "<a@x>", "not found on the destination after copying"),
        (2, None, "not found on the destination after copying"),
    ]
    assert out.verified == 0


def test_another_size_is_an_altered_copy() -> None:
    out = check("F", [meta(1, 100)], {1: 10}, {10: meta(10, 98)}, set(), every)
    assert out.altered == {1: 10}
    assert out.failures[0].reason == "destination UID 10 has 98 bytes, the source 100"
    assert out.failures[0].folder == "F"


def test_flags_that_differ_are_set_to_the_storable_source_flags() -> None:
    src = [meta(1, 100, ("\\Seen", "$custom", "\\Flagged"))]
    dst = {10: meta(10, 100, ("\\Seen",))}
    out = check("INBOX", src, {1: 10}, dst, set(), lambda f: f != "$custom")
    assert out.set_flags == [(10, ["\\Seen", "\\Flagged"])]
    assert out.verified == 1


def test_flags_compare_case_insensitively_and_ignore_recent() -> None:
    src = [meta(1, 100, ("\\SEEN",))]
    dst = {10: meta(10, 100, ("\\Seen", "\\Recent"))}
    assert check("INBOX", src, {1: 10}, dst, set(), every).set_flags == []


def test_internaldate_compares_instants_and_notes_a_difference() -> None:
    same = meta(10, 100, date=b"01-Jan-2020 11:00:00 +0100")
    other = meta(11, 100, date=b"02-Jan-2020 10:00:00 +0000")
    out = check(
        "INBOX", [meta(1, 100), meta(2, 100)], {1: 10, 2: 11}, {10: same, 11: other}, set(), every
    )
    assert out.verified == 2
    assert len(out.notes) == 1 and out.notes[0].startswith("UID 2: destination INTERNALDATE")


def test_messages_that_already_failed_are_not_judged_again() -> None:
    out = check("INBOX", [meta(1, 100)], {}, {}, {1}, every)
    assert out.failures == [] and out.verified == 0


def test_content_equal_different_and_unreadable() -> None:
    pairs = [(meta(1, 10), 10), (meta(2, 10), 11), (meta(3, 10), 12), (meta(4, 10), 13)]
    source = {1: b"a", 2: b"b", 4: b"d"}
    dest = {10: b"a", 11: b"X", 12: b"c"}
    ok, failures, altered = compare_content("INBOX", pairs, source, dest)
    assert ok == 1
    assert altered == {2: 11}
    reasons = {f.uid: f.reason for f in failures}
    assert "different SHA-256" in reasons[2]
    assert reasons[3] == "could not be read back from the source to compare its bytes"
    assert reasons[4] == "could not be read back from the destination to compare its bytes"
