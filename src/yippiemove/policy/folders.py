"""Map folder names between IMAP servers with different hierarchy conventions.

Pure functions on *decoded* (Unicode) names: modified UTF-7 is the job of
``yippiemove.imap.utf7``, so "&", non-ASCII and emoji pass through unchanged.

A server is described by its personal ``Namespace`` (RFC 2342 section 5:
prefix and hierarchy delimiter; the delimiter also comes from LIST, RFC 3501
section 7.2.2).  ``split_name`` turns a name into path components relative to
the personal namespace; ``join_name`` turns components into a name.
``map_folders`` applies these rules, highest precedence first:

1. INBOX (RFC 3501 section 5.1): a name equal to "INBOX" in any case is the
   inbox on both sides, spelled "INBOX" and never prefixed.  A leading "INBOX"
   path component is normalised to upper case too.  No other folder may take
   the destination's "INBOX", even when the inbox itself is not being mapped.
2. Prefix: the source prefix is stripped and the destination prefix added, so
   "INBOX.Sent" (Cyrus, Courier: prefix "INBOX.") <-> "Sent" (Dovecot: prefix
   "").  A name outside the source prefix keeps all its components and goes
   under the destination prefix, with a reason.
3. Children of INBOX: on a destination whose prefix is "INBOX<sep>" the
   children of INBOX *are* the top level, so ("INBOX", "x") becomes "INBOX.x",
   the same name as a top-level "x" (rule 6 keeps them apart).  Elsewhere
   "INBOX/x" stays a child of INBOX.  On a source with such a prefix,
   "INBOX.INBOX" is indistinguishable from the inbox in this model; rule 1
   renames it rather than merging it into the inbox.
4. Components, one by one: the destination separator becomes REPLACEMENT
   ("_", or "-" when the separator is itself "_"), and so does FLAT_JOINER
   when several components go to a flat server; an empty component becomes
   REPLACEMENT; "." and ".." (which file-system-backed servers may refuse)
   become "_" and "__".  Nothing else is touched: whitespace, "&", non-ASCII.
5. Flat destination (separator None): components are joined with FLAT_JOINER
   ("/"), which is an ordinary character there.
6. Collisions: two sources whose destination names are equal (exactly, or
   case-insensitively for "INBOX") are resolved by adding " (2)", " (3)", ...
   to the last component of the later one, skipping any name another folder
   (or its parent) wants.  Sources are taken in this order: fewer components
   first (so parents are decided before children), then the inbox, then names
   that needed no rule 1-5 change, then by code point.  A renamed folder's
   children follow it: "a" -> "a (2)" makes "a/x" -> "a (2)/x".

``FolderMapping.reasons`` explains every change beyond translating the
separator and prefix.  Creating missing parents is the caller's job; see
``parents``.

``targets`` (used by ``policy/rules.py``) gives some sources a destination path of
their own (components relative to the personal namespace, "INBOX" first for the inbox
and its children) instead of their source path; rules 3-6 still apply to it.
Sources whose paths (as given in ``targets``, else their source path) are equal, at
least one of them given in ``targets``, are *merged*: they share one destination name
(the first one's in the order of rule 6), with a reason naming the others.  A target
of ("INBOX",) is the destination's inbox.
"""

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "FLAT_JOINER",
    "INBOX",
    "REPLACEMENT",
    "FolderMapping",
    "Namespace",
    "join_name",
    "map_folders",
    "parents",
    "split_name",
]

INBOX = "INBOX"
REPLACEMENT = "_"
_ALT_REPLACEMENT = "-"  # used when the destination separator is "_"
FLAT_JOINER = "/"


@dataclass(frozen=True)
class Namespace:
    """A server's personal namespace (RFC 2342 section 5).

    ``prefix`` is e.g. "INBOX." on Cyrus/Courier, "" on Dovecot; a non-empty
    prefix missing its trailing separator gets it appended.  ``separator`` is
    the hierarchy delimiter, None for a flat server (NIL in RFC 3501 section
    7.2.2).
    """

    prefix: str = ""
    separator: str | None = "/"

    def __post_init__(self) -> None:
        sep = self.separator
        if sep is not None and len(sep) != 1:
            raise ValueError(f"hierarchy separator must be one character, not {sep!r}")
        if sep is not None and self.prefix and not self.prefix.endswith(sep):
            object.__setattr__(self, "prefix", self.prefix + sep)


@dataclass(frozen=True)
class FolderMapping:
    """Where one source folder goes; ``reasons`` is empty for a plain translation."""

    source: str
    dest: str
    reasons: tuple[str, ...] = ()


def _is_inbox(name: str) -> bool:
    return name.upper() == INBOX


def _inbox_rooted(ns: Namespace) -> bool:
    """True when the personal namespace is INBOX's children (prefix "INBOX<sep>")."""
    return ns.separator is not None and ns.prefix.upper() == INBOX + ns.separator


def _strip_prefix(name: str, ns: Namespace) -> str | None:
    """``name`` without the namespace prefix, or None if it lacks the prefix.

    A leading INBOX in the prefix matches case-insensitively (RFC 3501 5.1).
    """
    prefix = ns.prefix
    if name.startswith(prefix):
        return name[len(prefix) :]
    if ns.separator is not None and prefix.upper().startswith(INBOX + ns.separator):
        cut = len(INBOX) + 1
        if name[:cut].upper() == prefix[:cut].upper() and name[cut:].startswith(prefix[cut:]):
            return name[len(prefix) :]
    return None


def _split_raw(name: str, ns: Namespace) -> tuple[str, tuple[str, ...]]:
    """(prefix as spelled in ``name``, components without INBOX normalisation)."""
    if _is_inbox(name):
        return "", (name,)
    rest = _strip_prefix(name, ns)
    head = "" if rest is None else name[: len(name) - len(rest)]
    rest = name if rest is None else rest
    if not rest:
        raise ValueError(f"{name!r} is empty or the namespace prefix itself, not a folder")
    parts = (rest,) if ns.separator is None else tuple(rest.split(ns.separator))
    return head, parts


def split_name(name: str, ns: Namespace) -> tuple[str, ...]:
    """Path components of ``name`` relative to the personal namespace.

    The prefix is removed and a leading INBOX component is spelled "INBOX".
    A flat server's name is a single component.  Raises ValueError for ""
    and for the bare prefix.
    """
    parts = _split_raw(name, ns)[1]
    if _is_inbox(parts[0]):
        parts = (INBOX, *parts[1:])
    return parts


def join_name(parts: Sequence[str], ns: Namespace) -> str:
    """Inverse of ``split_name``: build the server's name for ``parts``.

    ("INBOX",) is "INBOX"; ("INBOX", ...) is unprefixed, except on an
    "INBOX<sep>" server where INBOX's children are the top level.  Flat
    servers join with FLAT_JOINER.  Raises ValueError for no parts or a
    component containing the separator.
    """
    parts = tuple(parts)
    if not parts:
        raise ValueError("a folder name needs at least one component")
    prefix = ns.prefix
    if _is_inbox(parts[0]):
        if len(parts) == 1:
            return INBOX
        if _inbox_rooted(ns):
            parts = parts[1:]
        else:
            parts = (INBOX, *parts[1:])
            prefix = ""
    if ns.separator is None:
        return prefix + FLAT_JOINER.join(parts)
    for part in parts:
        if ns.separator in part:
            raise ValueError(f"component {part!r} contains the separator {ns.separator!r}")
    return prefix + ns.separator.join(parts)


def _ancestors(name: str, ns: Namespace) -> list[str]:
    """Every ancestor of ``name``, outermost first, spelled as in ``name``."""
    if ns.separator is None or _is_inbox(name):
        return []
    head, parts = _split_raw(name, ns)
    found = (head + ns.separator.join(parts[:k]) for k in range(1, len(parts)))
    return [ancestor for ancestor in found if ancestor != head]


def parents(name: str, ns: Namespace) -> list[str]:
    """Ancestors of ``name`` to create before it, outermost first.

    Excludes INBOX (always exists, RFC 3501 section 5.1) and the namespace
    prefix; empty for flat servers.
    """
    return [ancestor for ancestor in _ancestors(name, ns) if not _is_inbox(ancestor)]


@dataclass(frozen=True)
class _Plan:
    source_parts: tuple[str, ...]
    dest_parts: tuple[str, ...]
    reasons: tuple[str, ...]


def _plan(
    name: str, src: Namespace, dst: Namespace, target: tuple[str, ...] | None = None
) -> _Plan:
    """Rules 1-5 for one source folder, ignoring the other folders."""
    reasons: list[str] = []
    raw = _split_raw(name, src)[1]
    source_parts = split_name(name, src)
    parts = source_parts if target is None else target
    if target is None and parts[0] == INBOX and raw[0] != INBOX:
        reasons.append(f"INBOX is case-insensitive (RFC 3501 section 5.1); {raw[0]!r} -> 'INBOX'")
    if target is None and src.prefix and parts[0] != INBOX and _strip_prefix(name, src) is None:
        reasons.append(
            f"not under the source personal namespace prefix {src.prefix!r}; "
            "placed under the destination's"
        )
    if parts[0] == INBOX and len(parts) > 1 and _inbox_rooted(dst):
        reasons.append(
            f"children of INBOX are top-level folders on the destination "
            f"(personal namespace prefix {dst.prefix!r})"
        )
    sep = dst.separator if dst.separator is not None else FLAT_JOINER
    repl = _ALT_REPLACEMENT if sep == REPLACEMENT else REPLACEMENT
    if dst.separator is None and len(parts) > 1:
        reasons.append(
            f"the destination has no hierarchy (flat, RFC 3501 section 7.2.2); "
            f"components joined with {FLAT_JOINER!r}"
        )
    out: list[str] = []
    for index, part in enumerate(parts):
        new = part
        if index == 0 and part == INBOX:
            out.append(new)
            continue
        if sep in new and (dst.separator is not None or len(parts) > 1):
            new = new.replace(sep, repl)
            role = "hierarchy separator" if dst.separator is not None else "joiner of components"
            reasons.append(f"{sep!r} is the destination's {role}; {part!r} -> {new!r}")
        if not new:
            new = repl
            reasons.append(f"empty path component -> {new!r}")
        elif new in (".", ".."):
            new = repl * len(new)
            reasons.append(f"{part!r} is not a valid path component on most servers -> {new!r}")
        out.append(new)
    return _Plan(source_parts, tuple(out), tuple(reasons))


def _key(dest: str) -> str:
    """Collision key: INBOX is case-insensitive, everything else exact."""
    return INBOX if _is_inbox(dest) else dest


def _suffixed(parts: tuple[str, ...], number: int) -> tuple[str, ...]:
    return (*parts[:-1], f"{parts[-1]} ({number})")


def _norm_target(parts: Sequence[str]) -> tuple[str, ...]:
    parts = tuple(parts)
    if not parts or any(not p for p in parts):
        raise ValueError(f"a destination path needs non-empty components, not {parts!r}")
    return (INBOX, *parts[1:]) if _is_inbox(parts[0]) else parts


def map_folders(
    sources: Sequence[str],
    src: Namespace,
    dst: Namespace,
    targets: Mapping[str, Sequence[str]] | None = None,
) -> list[FolderMapping]:
    """Map every source folder to a distinct destination name (or merge, see ``targets``).

    Returns one FolderMapping per source, in input order; see the module
    docstring for the rules.  Raises ValueError for duplicate sources.

    Long for a reason: names are made distinct in one pass (merges, separators, refused
    characters, collisions) over a shared table of names taken; each rule is a block.
    """
    source_set = set(sources)  # sets and dicts throughout: 20,000 folders (issue 14)
    if len(source_set) != len(sources):
        dupes = sorted(name for name, n in Counter(sources).items() if n > 1)
        raise ValueError(f"duplicate source folder names: {dupes!r}")
    given = {name: _norm_target(t) for name, t in (targets or {}).items() if name in source_set}
    plans = {name: _plan(name, src, dst, given.get(name)) for name in sources}
    # Merge groups: equal paths, at least one of them a given target.
    by_path: dict[tuple[str, ...], list[str]] = {}
    for name in sources:
        by_path.setdefault(given.get(name) or plans[name].source_parts, []).append(name)
    merge_key = {
        name: path
        for path, names in by_path.items()
        if len(names) > 1 and any(n in given for n in names)
        for name in names
    }
    group_first: dict[tuple[str, ...], str] = {}

    # Names some folder wants as is (or needs as a parent): suffixes avoid them.
    reserved: set[str] = set()
    for plan in plans.values():
        wanted = join_name(plan.dest_parts, dst)
        reserved.add(_key(wanted))
        reserved.update(_key(ancestor) for ancestor in _ancestors(wanted, dst))

    def priority(name: str) -> tuple[int, int, bool, str]:
        inbox_rank = 0 if name == INBOX else 1 if _is_inbox(name) else 2
        plan = plans[name]
        return (len(plan.source_parts), inbox_rank, bool(plan.reasons), name)

    taken: dict[str, str | None] = {INBOX: None}  # None: the inbox, not yet claimed
    final: dict[str, tuple[str, ...]] = {}
    mappings: dict[str, FolderMapping] = {}
    # The smallest free suffix only grows (names are only ever taken): start from the
    # last one found for the same parts, not from 2 again.
    next_number: dict[tuple[str, ...], int] = {}
    for name in sorted(sources, key=priority):
        plan = plans[name]
        parts = plan.dest_parts
        reasons = list(plan.reasons)
        group = merge_key.get(name)
        if group is not None and group in group_first:
            first = group_first[group]
            final[name] = final[first]
            mappings[name] = FolderMapping(name, mappings[first].dest, tuple(reasons))
            continue
        for ancestor in reversed(_ancestors(name, src)):
            if ancestor in final:
                depth = len(plans[ancestor].dest_parts)
                if (
                    final[ancestor] != plans[ancestor].dest_parts
                    and parts[:depth] == plans[ancestor].dest_parts
                ):
                    parts = final[ancestor] + parts[depth:]
                    reasons.append(
                        f"parent {ancestor!r} was renamed to {mappings[ancestor].dest!r}"
                    )
                break
        dest = join_name(parts, dst)
        key = _key(dest)
        claim_inbox = (
            key == INBOX
            and (_is_inbox(name) if name not in given else given[name] == (INBOX,))
            and taken[INBOX] is None
        )
        if key in taken and not claim_inbox:
            owner = taken[key]
            number = next_number.get(parts, 2)
            while True:
                candidate = join_name(_suffixed(parts, number), dst)
                if _key(candidate) not in taken and _key(candidate) not in reserved:
                    break
                number += 1
            next_number[parts] = number
            why = (
                "'INBOX' is reserved for the inbox"
                if owner is None
                else f"{dest!r} is already the destination of {owner!r}"
            )
            reasons.append(f"{why}; renamed to {candidate!r}")
            parts = _suffixed(parts, number)
            dest = candidate
            key = _key(dest)
        taken[key] = name
        final[name] = parts
        mappings[name] = FolderMapping(name, dest, tuple(reasons))
        if group is not None:
            group_first[group] = name
    members_of: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for n in sources:
        if merge_key.get(n) in group_first:
            members_of[merge_key[n]].append(n)
    for group in group_first:
        members = members_of[group]
        for name in members:
            others = ", ".join(repr(n) for n in members if n != name)
            m = mappings[name]
            why = f"merged with {others}: they share the destination folder {m.dest!r}"
            mappings[name] = FolderMapping(name, m.dest, (*m.reasons, why))
    return [mappings[name] for name in sources]
