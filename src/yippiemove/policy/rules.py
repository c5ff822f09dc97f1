"""User rules for folders (rename, merge, prefix, special folders) and message filters.

Rules name folders as *paths*: components relative to the personal namespace, joined
with "/" whatever the servers' hierarchy separators are ("Archive/2019" is
"INBOX.Archive.2019" on a Cyrus-style source and "Archive.2019" on a "." destination).
"INBOX" in any case is the inbox.  Precedence, highest first (docs/folders.md):

1. ``--folder`` / ``--exclude`` choose the source folders (``transfer/engine.py:
   select_folders``); nothing below sees the others.
2. ``--rename OLD=NEW``: exact path; it also moves OLD's subfolders ("OLD/x" becomes
   "NEW/x"); the rule with the longest OLD matching a folder wins.
3. ``--rename-regex REGEX=REPLACEMENT``: Python ``re``, matched against the whole path
   (``fullmatch``), ``\\1`` / ``\\g<name>`` in the replacement; the first matching
   rule in the order given wins; it renames only the folders it matches.
4. Special folders (unless ``--no-special``): a folder no rename matched and that has a
   role (``policy/special.py``) goes to the destination's folder with that role;
   its subfolders follow it.  A role the server marks by SPECIAL-USE is never found by
   a name on that server: a folder only named like one is ordinary, and if its own name
   is where a special folder goes, it is kept apart with " (2)" (never merged without
   a rule).
5. ``--under PREFIX``: every folder goes under PREFIX, except INBOX (unless
   ``--under-inbox``) and special folders with their subfolders (``--no-special``
   puts those under PREFIX too).  Renamed folders go under it as well: rename targets
   are relative to PREFIX.
6. Names across namespaces and separators, collisions (``policy/folders.py``).
   Two or more folders that rules 2-5 send to the same path are *merged* into one
   destination folder (reported); folders that only collide through rule 6 are
   kept apart with " (2)".
7. At run time, a name the destination refuses becomes a plain ASCII one
   (``transfer/engine.py``).

Rule text: ``OLD=NEW`` splits at the first "=" not escaped by a backslash; in exact
renames ``\\=`` is a literal "=" and ``\\\\`` a backslash.  In a regex rule, an "=" of
``(?=``, ``(?<=``, ``(?P=`` belongs to the regex, and ``\\=`` matches "=".

Message filters (``MessageFilter``) are IMAP SEARCH keys run on the source (RFC 3501
section 6.4.4): ``--since D`` = SINCE (INTERNALDATE's date on or after D), ``--before
D`` = BEFORE (strictly before D), ``--larger N`` = LARGER (RFC822.SIZE > N), ``--smaller
N`` = SMALLER (< N).  Dates are YYYY-MM-DD; sizes are bytes with an optional k, M or G
suffix (powers of 1024).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from .folders import INBOX, Namespace, map_folders, split_name
from .special import Box, SpecialTarget, lookalike, plan_special, server_marks

__all__ = [
    "RULE_KEYS",
    "FolderRules",
    "MessageFilter",
    "Placement",
    "RegexRename",
    "Rename",
    "RuleError",
    "from_options",
    "parse_date",
    "parse_path",
    "parse_regex_rename",
    "parse_rename",
    "parse_size",
    "place_folders",
]


class RuleError(ValueError):
    """A folder rule or message filter is wrong; the message names it."""


# ----------------------------------------------------------------------------- parsing


def parse_path(text: str, what: str) -> tuple[str, ...]:
    """A "/"-separated folder path; a leading INBOX component is spelled "INBOX"."""
    if not text or not text.strip():
        raise RuleError(f"{what}: the folder name is empty")
    parts = tuple(text.split("/"))
    if any(not p for p in parts):
        raise RuleError(
            f"{what}: {text!r} has an empty path component (a leading, trailing or double '/')"
        )
    if parts[0].upper() == INBOX:
        parts = (INBOX, *parts[1:])
    return parts


def _split_rule(text: str, what: str, *, regex: bool) -> tuple[str, str]:
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "=" and not (regex and re.search(r"\(\?(?:<|P)?\Z", text[:i])):
            return text[:i], text[i + 1 :]
        i += 1
    raise RuleError(f"{what} {text!r}: expected OLD=NEW (an '=' between the two names)")


def _unescape(text: str) -> str:
    return re.sub(r"\\([\\=])", r"\1", text)


@dataclass(frozen=True)
class Rename:
    """``--rename OLD=NEW``: exact path, with its subfolders."""

    old: tuple[str, ...]
    new: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class RegexRename:
    """``--rename-regex REGEX=REPLACEMENT``: whole path, Python ``re`` syntax."""

    pattern: re.Pattern[str]
    replacement: str
    text: str


def parse_rename(text: str) -> Rename:
    old, new = _split_rule(text, "--rename", regex=False)
    what = f"--rename {text!r}"
    return Rename(parse_path(_unescape(old), what), parse_path(_unescape(new), what), text)


def parse_regex_rename(text: str) -> RegexRename:
    what = f"--rename-regex {text!r}"
    pattern, replacement = _split_rule(text, "--rename-regex", regex=True)
    if not pattern:
        raise RuleError(f"{what}: the regular expression is empty")
    if not replacement:
        raise RuleError(f"{what}: the replacement is empty")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise RuleError(f"{what}: invalid regular expression: {exc}") from None
    # Check the replacement's group references against a pattern with the same groups.
    try:
        probe = re.compile(f"(?:{pattern})|", compiled.flags)
    except re.error:
        probe = None  # e.g. global flags such as (?i) at the start: checked when applied
    if probe is not None:
        m = probe.fullmatch("")
        assert m is not None
        try:
            m.expand(replacement)
        except (re.error, IndexError) as exc:
            raise RuleError(f"{what}: invalid replacement: {exc}") from None
    return RegexRename(compiled, replacement, text)


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_SIZE = re.compile(r"(\d+)\s*([kKmMgG]?)")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def parse_date(text: str, what: str) -> date:
    text = text.strip()
    if not _DATE.fullmatch(text):
        raise RuleError(f"{what} {text!r}: expected a date as YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise RuleError(f"{what} {text!r}: {exc}") from None


def parse_size(text: str, what: str) -> int:
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise RuleError(f"{what} {text!r}: expected a size in bytes, e.g. 500000, 200k, 10M, 1G")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def imap_date(d: date) -> str:
    """RFC 3501 date: 1-Feb-2020 (English month names whatever the locale)."""
    return f"{d.day}-{_MONTHS[d.month - 1]}-{d.year}"


# ----------------------------------------------------------------------------- the rules


@dataclass(frozen=True)
class FolderRules:
    """Folder rules, parsed; see the module docstring for their precedence."""

    renames: tuple[Rename, ...] = ()
    regex_renames: tuple[RegexRename, ...] = ()
    under: tuple[str, ...] = ()
    under_inbox: bool = False
    special: bool = True

    @classmethod
    def parse(
        cls,
        *,
        renames: Iterable[str] = (),
        regex_renames: Iterable[str] = (),
        under: str | None = None,
        under_inbox: bool = False,
        special: bool = True,
    ) -> FolderRules:
        exact = tuple(parse_rename(r) for r in renames)
        seen: dict[tuple[str, ...], str] = {}
        for r in exact:
            if r.old in seen and seen[r.old] != r.text:
                raise RuleError(
                    f"--rename {seen[r.old]!r} and --rename {r.text!r} rename the same folder"
                )
            seen[r.old] = r.text
        prefix = parse_path(under, "--under") if under is not None else ()
        if under_inbox and not prefix:
            raise RuleError("--under-inbox needs --under PREFIX")
        return cls(
            exact,
            tuple(parse_regex_rename(r) for r in regex_renames),
            prefix,
            under_inbox,
            special,
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "rename": [r.text for r in self.renames],
            "rename_regex": [r.text for r in self.regex_renames],
            "under": "/".join(self.under) or None,
            "under_inbox": self.under_inbox,
            "special": self.special,
        }


@dataclass(frozen=True)
class MessageFilter:
    """Which messages of each folder to copy (IMAP SEARCH on the source)."""

    since: date | None = None
    before: date | None = None
    larger: int | None = None
    smaller: int | None = None

    @classmethod
    def parse(
        cls,
        *,
        since: str | None = None,
        before: str | None = None,
        larger: str | int | None = None,
        smaller: str | int | None = None,
    ) -> MessageFilter:
        s = parse_date(since, "--since") if since is not None else None
        b = parse_date(before, "--before") if before is not None else None
        lg = _size(larger, "--larger")
        sm = _size(smaller, "--smaller")
        if s is not None and b is not None and s >= b:
            raise RuleError(f"--since {s} is not before --before {b}: no message would match")
        if lg is not None and sm is not None and sm <= lg + 1:
            raise RuleError(
                f"--smaller {sm} must exceed --larger {lg} by more than one byte: "
                "no message would match"
            )
        return cls(s, b, lg, sm)

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.since, self.before, self.larger, self.smaller))

    def criteria(self) -> list[bytes]:
        """UID SEARCH keys (ANDed); ["ALL"] when no filter is set."""
        keys: list[bytes] = []
        if self.since is not None:
            keys += [b"SINCE", imap_date(self.since).encode()]
        if self.before is not None:
            keys += [b"BEFORE", imap_date(self.before).encode()]
        if self.larger is not None:
            keys += [b"LARGER", str(self.larger).encode()]
        if self.smaller is not None:
            keys += [b"SMALLER", str(self.smaller).encode()]
        return keys or [b"ALL"]

    def describe(self) -> str:
        parts = []
        if self.since is not None:
            parts.append(f"received on or after {self.since}")
        if self.before is not None:
            parts.append(f"received before {self.before}")
        if self.larger is not None:
            parts.append(f"larger than {self.larger} bytes")
        if self.smaller is not None:
            parts.append(f"smaller than {self.smaller} bytes")
        return ", ".join(parts) or "all messages"

    def as_dict(self) -> dict[str, object]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "before": self.before.isoformat() if self.before else None,
            "larger": self.larger,
            "smaller": self.smaller,
        }


def _size(value: str | int | None, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        if value < 0:
            raise RuleError(f"{what} {value}: must not be negative")
        return value
    return parse_size(value, what)


# ----------------------------------------------------------------------------- placing


@dataclass(frozen=True)
class Placement:
    """Where one source folder goes and why.

    ``role`` is the special role it was mapped by (None otherwise); ``create_use`` the
    RFC 6154 attribute to CREATE it with when it is missing; ``merged_with`` the other
    source folders sharing its destination.
    """

    source: str
    dest: str
    reasons: tuple[str, ...]
    role: str | None = None
    create_use: str | None = None
    merged_with: tuple[str, ...] = ()


def _path_text(parts: Sequence[str]) -> str:
    return "/".join(parts)


def place_folders(
    sources: Sequence[Box],
    src: Namespace,
    dest_boxes: Sequence[Box],
    dst: Namespace,
    rules: FolderRules | None = None,
    *,
    create_special_use: bool = False,
    source_boxes: Sequence[Box] = (),
) -> list[Placement]:
    """Apply the rules to the chosen source folders; one Placement each, in input order.

    ``dest_boxes`` are the destination's folders (for its special folders);
    ``source_boxes`` the source's whole LIST when ``sources`` are only some of them (the
    roles the source marks by SPECIAL-USE count for every chosen folder).  Raises
    RuleError when a regex rule produces an unusable name.

    Long for a reason: the precedence of docs/folders.md (rules, then special folders,
    then subfolders following their parent, then the prefix) is applied in one pass over
    shared bookkeeping (targets, reasons, kinds); each step is a commented block.
    """
    rules = rules or FolderRules()
    names = [b.name for b in sources]
    path = {b.name: split_name(b.name, src) for b in sources}
    targets: dict[str, tuple[str, ...]] = {}
    reasons: dict[str, list[str]] = {n: [] for n in names}
    kind: dict[str, str] = {}  # "rule" | "special" | "follow"

    # 2, 3: renames.  The longest --rename whose path the folder's path starts with
    # (the first of equal ones), looked up by the folder's own prefixes: a dict, not a
    # try of every rule per folder (issue 14: thousands of rules times 20,000 folders).
    by_old: dict[tuple[str, ...], Rename] = {}
    for r in rules.renames:
        by_old.setdefault(r.old, r)
    for name in names:
        p = path[name]
        best: Rename | None = None
        for k in range(len(p), 0, -1) if by_old else ():
            best = by_old.get(p[:k])
            if best is not None:
                break
        if best is not None:
            targets[name] = best.new + p[len(best.old) :]
            note = "" if len(best.old) == len(p) else f" (a subfolder of {_path_text(best.old)!r})"
            reasons[name].append(f"--rename {best.text}{note}")
            kind[name] = "rule"
            continue
        text = _path_text(p)
        for rx in rules.regex_renames:
            m = rx.pattern.fullmatch(text)
            if m is None:
                continue
            what = f"--rename-regex {rx.text!r}"
            try:
                new = m.expand(rx.replacement)
            except (re.error, IndexError) as exc:
                raise RuleError(f"{what}: invalid replacement: {exc}") from None
            try:
                targets[name] = parse_path(new, what)
            except RuleError as exc:
                raise RuleError(f"{exc} (renaming {name!r})") from None
            reasons[name].append(f"--rename-regex {rx.text}")
            kind[name] = "rule"
            break

    # 4: special folders, and their subfolders
    roles: dict[str, str] = {}
    create_use: dict[str, str] = {}
    exact_dest: dict[str, str] = {}
    if rules.special:
        marks = server_marks([*source_boxes, *sources])
        special, views = plan_special(
            [b for b in sources if b.name not in kind],
            src,
            dest_boxes,
            dst,
            create_special_use=create_special_use,
            marks=marks,
        )
        for name, st in special.items():
            targets[name] = st.parts
            reasons[name].extend(st.reasons)
            kind[name] = "special"
            roles[name] = st.role.role
            if st.dest is not None:
                exact_dest[name] = st.dest
            elif st.use is not None:
                create_use[name] = st.use
        for name, note in views.items():
            reasons[name].append(note)
        _explain_lookalikes(sources, src, marks, special, kind, reasons)
        by_path = {path[n]: n for n in names}
        for name in sorted(names, key=lambda n: len(path[n])):
            if name in kind:
                continue
            p = path[name]
            for k in range(len(p) - 1, 0, -1):
                parent = by_path.get(p[:k])
                if parent is None:
                    continue
                if kind.get(parent) in ("special", "follow"):
                    targets[name] = targets[parent] + p[k:]
                    kind[name] = "follow"
                    reasons[name].append(
                        f"its parent {parent!r} is a special folder; it follows it"
                    )
                break

    # 5: the prefix
    if rules.under:
        under = _path_text(rules.under)
        for name in names:
            if kind.get(name) in ("special", "follow"):
                continue
            t = targets.get(name, path[name])
            if t == (INBOX,) and not rules.under_inbox:
                continue
            targets[name] = rules.under + t
            reasons[name].append(f"--under {under}")

    # Never merged without a rule: an ordinary folder whose own name is where a special
    # folder goes ("Drafts" beside the source's \Drafts "Entwürfe", both bound for the
    # destination's "Drafts") is kept apart, its subfolders with it.
    if rules.special:
        _keep_apart(names, path, targets, kind, reasons)

    # 6: namespaces, separators, collisions, merges
    mapped = {m.source: m for m in map_folders(names, src, dst, targets)}
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(mapped[name].dest, []).append(name)
    dest_by_name = {b.name: b for b in dest_boxes}
    dest_marks = server_marks(dest_boxes)
    out: list[Placement] = []
    for name in names:
        m = mapped[name]
        dest = exact_dest.get(name, m.dest)
        why = reasons[name] + list(m.reasons)
        final_parts = split_name(dest, dst) if dest.upper() != INBOX else (INBOX,)
        seps = (src.separator, dst.separator)
        if None not in seps and seps[0] != seps[1] and len(final_parts) > 1:
            why.append(
                f"the destination's hierarchy separator is {dst.separator!r} "
                f"(the source's {src.separator!r})"
            )
        if src.prefix != dst.prefix and final_parts != (INBOX,) and name.upper() != INBOX:
            why.append(
                f"the destination's personal namespace prefix is {dst.prefix!r} "
                f"(the source's {src.prefix!r})"
            )
        if rules.special and name not in roles and dest in dest_by_name:
            look = lookalike(dest_by_name[dest], dst, dest_marks, "destination")
            if look is not None:
                why.append(f"{dest!r} on the destination is {look[1]}")
        merged = tuple(n for n in groups[m.dest] if n != name)
        out.append(
            Placement(
                name,
                dest,
                tuple(why),
                roles.get(name),
                create_use.get(name),
                merged,
            )
        )
    return out


def _explain_lookalikes(
    sources: Sequence[Box],
    src: Namespace,
    marks: Mapping[str, tuple[str, ...]],
    special: Mapping[str, SpecialTarget],
    kind: Mapping[str, str],
    reasons: dict[str, list[str]],
) -> None:
    """Reasons for folders only named like a role the source marks by SPECIAL-USE, and
    on the marked folders: which look-alikes stay apart."""
    alike: dict[str, list[str]] = {}
    for box in sources:
        if box.name in kind or box.name in special:
            continue
        look = lookalike(box, src, marks, "source")
        if look is not None:
            reasons[box.name].append(look[1])
            alike.setdefault(look[0], []).append(box.name)
    for name, st in special.items():
        others = alike.get(st.role.role)
        if others and st.role.how == "special-use":
            shown = ", ".join(repr(o) for o in others)
            reasons[name].append(
                f"the source marks it {st.role.attribute}; {shown} only "
                f"{'looks' if len(others) == 1 else 'look'} like one and "
                f"{'stays' if len(others) == 1 else 'stay'} apart"
            )


def _fold(parts: Sequence[str]) -> tuple[str, ...]:
    return tuple(p.casefold() for p in parts)


def _keep_apart(
    names: Sequence[str],
    path: Mapping[str, tuple[str, ...]],
    targets: dict[str, tuple[str, ...]],
    kind: dict[str, str],
    reasons: dict[str, list[str]],
) -> None:
    """Give an ordinary folder (no rule, no role) whose own path is a special folder's
    target a free " (n)" name instead, so that map_folders does not merge the two; its
    subfolders without a rule follow it."""
    bound = {_fold(t): n for n, t in targets.items() if kind.get(n) in ("special", "follow")}
    if not bound:
        return
    # Only the source's names are avoided, not the destination's: a re-run finds the
    # "Drafts (2)" it made and must choose it again.
    used = {_fold(path[n]) for n in names} | {_fold(t) for t in targets.values()}
    moved: dict[tuple[str, ...], tuple[str, ...]] = {}
    for name in sorted(names, key=lambda n: (len(path[n]), n)):
        if name in kind or name in targets:
            continue
        p = path[name]
        parent = next((p[:k] for k in range(len(p) - 1, 0, -1) if p[:k] in moved), None)
        if parent is not None:
            targets[name] = moved[parent] + p[len(parent) :]
            kind[name] = "apart"
            reasons[name].append(f"its parent {_path_text(parent)!r} was kept apart; it follows it")
            moved[p] = targets[name]
            continue
        owner = bound.get(_fold(p))
        if owner is None:
            continue
        number = 2
        while True:
            new = (*p[:-1], f"{p[-1]} ({number})")
            if _fold(new) not in used:
                break
            number += 1
        used.add(_fold(new))
        targets[name] = new
        kind[name] = "apart"
        moved[p] = new
        reasons[name].append(
            f"{_path_text(p)!r} is where the special folder {owner!r} goes; two source "
            f"folders are merged only by a rule (--rename): kept apart as {_path_text(new)!r}"
        )


#: Keys of a job's ``folders`` object (the service's API) that carry rules and filters.
RULE_KEYS = (
    "rename",
    "rename_regex",
    "under",
    "under_inbox",
    "special",
    "since",
    "before",
    "larger",
    "smaller",
)


def from_options(options: Mapping[str, Any]) -> tuple[FolderRules, MessageFilter]:
    """Rules and filters from JSON (the service's ``folders`` object, RULE_KEYS).

    The same names and syntax as the command line's options; raises RuleError.
    """

    def strings(key: str) -> list[str]:
        value = options.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RuleError(f"{key}: must be a list of strings")
        return value

    def text(key: str) -> str | None:
        value = options.get(key)
        if value is not None and not isinstance(value, str):
            raise RuleError(f"{key}: must be a string")
        return value

    def flag(key: str, default: bool) -> bool:
        value = options.get(key, default)
        if not isinstance(value, bool):
            raise RuleError(f"{key}: must be true or false")
        return value

    def size(key: str) -> str | int | None:
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
            raise RuleError(f"{key}: must be a number of bytes or a string like '10M'")
        return value

    rules = FolderRules.parse(
        renames=strings("rename"),
        regex_renames=strings("rename_regex"),
        under=text("under"),
        under_inbox=flag("under_inbox", False),
        special=flag("special", True),
    )
    filters = MessageFilter.parse(
        since=text("since"), before=text("before"), larger=size("larger"), smaller=size("smaller")
    )
    return rules, filters
