"""Matching from fixtures: "is this source message already on the destination?"

transfer/matching.py is pure: each test builds listings by hand and checks the decision,
in milliseconds, without a server (the real-server tests still prove exactness)."""

from __future__ import annotations

from dataclasses import dataclass

from yippiemove.imap.client import MessageMeta
from yippiemove.transfer.gmail import instant
from yippiemove.transfer.matching import (
    ContentPool,
    claim_from_state,
    find_ambiguous,
    flags_kept_by_merge,
    flags_kept_on_gmail,
    match_by_message_id,
    size_candidates,
)
from yippiemove.transfer.model import Outcome

DATE = b"01-Jan-2020 10:00:00 +0000"


def meta(uid: int, size: int, flags: tuple[str, ...] = (), date: bytes = DATE) -> MessageMeta:
    return MessageMeta(uid, size, flags, date, None)


@dataclass
class Row:
    dest_uid: int | None
    outcome: str


def test_state_claims_what_it_stored_whatever_its_size() -> None:
    # Issue 13: UID 11 holds another size -- the server stored it altered (line endings);
    # before, it was not claimed and a re-run after kill -9 appended it again.  Under
    # the same UIDVALIDITY the UID is that message: claimed, and the verify judges it.
    src = [meta(1, 100), meta(2, 200), meta(3, 300)]
    dst = {10: meta(10, 100), 11: meta(11, 999), 12: meta(12, 300)}
    rows = {1: Row(10, "copied"), 2: Row(11, "copied"), 3: Row(12, "present")}
    m = claim_from_state(src, rows, dst)
    assert m.claim == {1: 10, 2: 11, 3: 12}
    assert m.claimed_dest == {10, 11, 12}
    assert m.outcome_of == {1: Outcome.PRESENT, 2: Outcome.PRESENT, 3: Outcome.PRESENT}
    assert m.appended == {1, 2}  # only "copied" means this job appended it


def test_state_claims_an_altered_copy_whatever_its_size() -> None:
    m = claim_from_state([meta(1, 100)], {1: Row(10, "altered")}, {10: meta(10, 98)})
    assert m.claim == {1: 10}


def test_state_rows_without_destination_or_not_stored_claim_nothing() -> None:
    src = [meta(1, 100), meta(2, 100), meta(3, 100)]
    dst = {10: meta(10, 100)}
    rows = {1: Row(None, "copied"), 2: Row(10, "failed"), 3: Row(10, "missing")}
    assert claim_from_state(src, rows, dst).claim == {}


def test_state_never_claims_one_destination_message_twice() -> None:
    src = [meta(1, 100), meta(2, 100)]
    rows = {1: Row(10, "copied"), 2: Row(10, "copied")}  # a corrupt or stale state
    m = claim_from_state(src, rows, {10: meta(10, 100)})
    assert m.claim == {1: 10}


def test_state_row_for_a_vanished_destination_message_claims_nothing() -> None:
    m = claim_from_state([meta(1, 100)], {1: Row(10, "copied")}, {})
    assert m.claim == {} and m.outcome_of == {}


def test_only_sizes_found_on_the_other_side_are_candidates() -> None:
    s, d = size_candidates([meta(1, 100), meta(2, 200)], [meta(10, 200), meta(11, 300)])
    assert [m.uid for m in s] == [2] and [m.uid for m in d] == [10]
    assert size_candidates([], [meta(10, 1)]) == ([], [])
    assert size_candidates([meta(1, 1)], []) == ([], [])


def test_ambiguous_needs_size_and_message_id() -> None:
    s = [meta(1, 100), meta(2, 100), meta(3, 100)]
    d = [meta(10, 100), meta(11, 100)]
    s_ids = {1: b"<a@x>", 2: b"<b@x>", 3: None}
    d_ids = {10: b"<a@x>", 11: None}
    amb, cands = find_ambiguous(s, s_ids, d, d_ids)
    # 1 matches 10 by Message-ID; 3 (no Message-ID) matches 11 (none either); 2 nothing.
    assert amb == {1, 3} and cands == {10, 11}


def test_ambiguous_on_gmail_needs_the_same_instant() -> None:
    later = b"01-Jan-2020 11:00:00 +0000"
    same_instant = b"01-Jan-2020 11:00:00 +0100"  # = 10:00 UTC
    s = [meta(1, 100), meta(2, 100, date=later)]
    d = [meta(10, 100, date=same_instant)]
    ids = {1: b"<a@x>", 2: b"<a@x>"}
    amb, cands = find_ambiguous(s, ids, d, {10: b"<a@x>"}, instant=instant)
    assert amb == {1} and cands == {10}
    amb, _ = find_ambiguous(s, ids, d, {10: b"<a@x>"})  # not Gmail: dates do not count
    assert amb == {1, 2}


def test_content_pool_gives_each_destination_message_once_lowest_uid_first() -> None:
    pool = ContentPool({12: (100, b"h1"), 11: (100, b"h1"), 13: (100, b"h2")})
    assert pool.take(100, b"h1") == 11
    assert pool.take(100, b"h1") == 12
    assert pool.take(100, b"h1") is None  # multiplicity: a third copy is appended
    assert pool.take(101, b"h2") is None  # same hash, other size: not the same bytes
    assert pool.take(100, b"h2") == 13


def test_no_uidplus_matches_by_size_and_message_id_in_order() -> None:
    unmapped = [meta(1, 100), meta(2, 100), meta(3, 50)]
    free = [meta(20, 100), meta(21, 100), meta(22, 60)]
    ids = {1: b"<a@x>", 2: b"<a@x>", 3: b"<c@x>"}
    d_ids = {20: b"<a@x>", 21: b"<a@x>", 22: b"<c@x>"}
    assert match_by_message_id(unmapped, ids, free, d_ids) == {1: 20, 2: 21}


def test_merge_keeps_the_first_folders_flags() -> None:
    smeta = [meta(1, 100, ("\\Seen",)), meta(2, 100, ("\\Flagged",))]
    dest = {10: meta(10, 100, ("\\Answered", "\\Recent")), 11: meta(11, 100, ())}
    out = flags_kept_by_merge(smeta, {1: 10, 2: 11}, dest, earlier={10})
    assert out[0].flags == ("\\Answered",)  # claimed earlier: its flags, without \Recent
    assert out[1].flags == ("\\Flagged",)  # this folder's own


def test_gmail_message_of_another_folder_keeps_its_flags() -> None:
    smeta = [meta(1, 100, ("\\Seen",)), meta(2, 100, ())]
    out = flags_kept_on_gmail(smeta, {1: 10, 2: 11}, shared={10}, have={10: ("\\Flagged",)})
    assert [m.flags for m in out] == [("\\Flagged",), ()]
