"""Planning a transfer: list both sides, choose and place the source folders
(policy/rules.py: rules, special folders, namespaces), count what the message filters
select, and find the flags each destination folder cannot keep.  Gmail on either side
(policy/gmail.py): its views are not copied, archived messages are, and a message of
several folders is stored once with several labels.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import fnmatch
import functools
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..imap import utf7
from ..imap.client import MailboxInfo, NamespaceInfo, SelectInfo
from ..imap.protocol import format_uid_set
from ..policy import folders as folder_policy
from ..policy import gmail as gmail_policy
from ..policy import rules as rule_policy
from ..policy.special import Box
from .context import Context, chunks_by_count, norm_inbox
from .folder import list_source
from .identity import SameMailbox, mailbox_id, same_mailbox
from .model import FolderPlan, GmailPlan, Phase, Plan
from .refusals import PlanError
from .store import GmailStore, Store, name_encoder

__all__ = ["Planner", "gather_all", "select_folders"]


async def gather_all(*aws: Awaitable[Any]) -> list[Any]:
    """``asyncio.gather`` that, when one fails, cancels and waits for the others before
    raising the first error (no orphaned command keeps a connection busy)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _nothing() -> dict[bytes, SelectInfo | None]:
    return {}


async def _none() -> None:
    return None


class Planner:
    """Makes the :class:`Plan` of a transfer; sets up the context's Gmail parts."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        #: The destination's subscriptions, listed while planning.
        self.dst_subscribed: set[str] | None = None

    async def make_plan(self, src: Store, dst: Store) -> Plan:
        """List both sides, choose and place the source folders (policy/rules.py: rules,
        special folders, namespaces), count what the message filters select and find
        the flags each destination folder cannot keep.  Gmail on either side
        (policy/gmail.py): its views are not copied, archived messages are, and a
        message of several folders is stored once with several labels."""
        ctx = self.ctx
        ctx.progress.phase = Phase.PLANNING
        opts = ctx.options
        sides = await self._list_sides(src, dst)
        dst_names = sides.dst_names
        skipped = [
            (m.name, "not selectable (\\Noselect)") for m in sides.src_boxes if not m.selectable
        ]
        choice = self._choose(isinstance(src, GmailStore), sides, skipped)
        try:
            # Pure CPU, about a second for 20,000 folders a side: in a worker thread, so
            # that the event loop (the web process's, during a check) keeps serving.
            placements = await asyncio.to_thread(
                functools.partial(
                    rule_policy.place_folders,
                    [Box(m.name, m.flags) for m in choice.chosen],
                    sides.src_pol,
                    [Box(m.name, m.flags) for m in sides.dst_boxes],
                    sides.dst_pol,
                    opts.rules,
                    create_special_use=dst.has("CREATE-SPECIAL-USE"),
                    source_boxes=[Box(m.name, m.flags) for m in sides.src_boxes],
                )
            )
        except ValueError as exc:  # RuleError: a --rename-regex made an unusable name
            raise PlanError(str(exc)) from None
        by_source = {p.source: p for p in placements}

        counts = await self._counts(src, choice.folders)
        entries = [(m, by_source[m.name], counts[m.raw], False) for m in choice.folders]
        dst_gmail = isinstance(dst, GmailStore)
        dst_all_name = gmail_policy.all_mail_folder(
            [Box(m.name, m.flags) for m in sides.dst_boxes], sides.dst_pol
        )
        dst_all = dst_names.get(dst_all_name) if dst_gmail and dst_all_name else None
        if choice.archived:
            all_mail = choice.all_mail
            assert all_mail is not None and ctx.gmail_src is not None
            placement = self._archive_placement(
                by_source[gmail_policy.ARCHIVE_NAME],
                all_mail,
                choice.pseudo is None,
                dst_all,
                dst_names,
            )
            count = await ctx.gmail_src.count_archived(src, all_mail.raw, opts.filters)  # type: ignore[arg-type]
            entries = _merged([*entries, (all_mail, placement, count, True)])

        # What the destination folders can store: PERMANENTFLAGS needs SELECT (EXAMINE
        # answers PERMANENTFLAGS ()); a folder still to be created is judged by INBOX.
        targets = {norm_inbox(pl.dest) for _m, pl, _c, _a in entries}
        dst_raws = sorted({dst_names[k].raw for k in targets if k in dst_names} | {b"INBOX"})
        dst_infos = await dst.select_many(dst_raws) if entries and opts.dry_run else {}
        plans, create = _folder_plans(
            entries, dst_names, sides.src_subs, dst_infos, encode=name_encoder(dst)
        )
        gmail = None
        ctx.gmail_dest = None
        ctx.gmail_shared = set()
        if choice.src_gmail or dst_gmail:
            gmail = await self._gmail_plan(src, plans, dst_names, choice, dst_gmail, dst_all)
        plan = Plan(
            sides.src_ns, sides.dst_ns, plans, create, skipped, opts.rules, opts.filters, gmail
        )
        ctx.progress.folders_total = len(plans)
        ctx.progress.messages_total = plan.total_messages
        ctx.progress.bytes_total = plan.total_bytes
        return plan

    async def _list_sides(self, src: Store, dst: Store) -> _Sides:
        """Both sides at once, each side's commands pipelined: one round trip, not five.

        Then, before anything else reads or writes (transfer/identity.py): is the
        destination the source under another name?  INBOX's server-wide identity is
        asked in the same round trip; the listings are the ones the plan uses."""
        two = src is not dst  # the service's account check plans one account alone
        (
            src_ns,
            src_boxes,
            src_sub_boxes,
            dst_ns,
            dst_boxes,
            dst_sub_boxes,
            src_id,
            dst_id,
        ) = await gather_all(
            src.namespace(),
            src.list_folders(),
            src.list_subscribed(),
            dst.namespace(),
            dst.list_folders(),
            dst.list_subscribed(),
            mailbox_id(src) if two else _none(),
            mailbox_id(dst) if two else _none(),
        )
        if two:
            state = self.ctx.state
            ours = {
                row.dest_name: row.dest_uidvalidity
                for row in (state.folders() if state is not None else [])
                if row.dest_name is not None and row.dest_uidvalidity is not None
            }
            why = await same_mailbox(
                src, dst, ids=(src_id, dst_id), boxes=(src_boxes, dst_boxes), ours=ours
            )
            if why is not None:
                raise SameMailbox(why)
        self.dst_subscribed = {m.name for m in dst_sub_boxes}
        # Separators: each LIST answer names its own; the namespace's is the default.
        return _Sides(
            src_ns,
            src_boxes,
            {m.name for m in src_sub_boxes},
            folder_policy.Namespace(src_ns.prefix, src_ns.separator),
            dst_ns,
            dst_boxes,
            {norm_inbox(m.name): m for m in dst_boxes},
            folder_policy.Namespace(dst_ns.prefix, dst_ns.separator),
        )

    def _choose(self, src_gmail: bool, sides: _Sides, skipped: list[tuple[str, str]]) -> _Choice:
        """The source folders --folder/--exclude choose (the others go to ``skipped``).

        Gmail source: its views are skipped; archived messages come from All Mail
        through a pseudo-folder "Archive" (for --folder/--exclude and the rules)."""
        opts = self.ctx.options
        src_pol = sides.src_pol
        selectable = [m for m in sides.src_boxes if m.selectable]
        c = _Choice(src_gmail)
        self.ctx.gmail_src = None
        if src_gmail:
            from .gmail import GmailSource  # only for a Gmail account (start-up)

            boxes = [Box(m.name, m.flags) for m in selectable]
            c.views = gmail_policy.views(boxes, src_pol)
            c.labels = gmail_policy.folder_labels(boxes, src_pol)
            found = gmail_policy.all_mail_folder(boxes, src_pol)
            c.all_mail = next((m for m in selectable if m.name == found), None)
            self.ctx.gmail_src = GmailSource(c.labels)
            if c.all_mail is not None and not any(
                m.name == gmail_policy.ARCHIVE_NAME for m in selectable
            ):
                c.pseudo = MailboxInfo(
                    c.all_mail.raw,
                    gmail_policy.ARCHIVE_NAME,
                    c.all_mail.separator,
                    gmail_policy.ARCHIVE_BOX.attributes,
                )
        views, pseudo, all_mail = c.views, c.pseudo, c.all_mail
        candidates = selectable + ([pseudo] if pseudo is not None else [])
        included = select_folders(candidates, opts.include, [], src_pol)
        kept = select_folders(candidates, [], opts.exclude, src_pol)
        kept_ids = {id(m) for m in kept}  # one pass (issue 14: not a list test per folder)
        chosen = [m for m in included if id(m) in kept_ids]
        # The archive is named "Archive" or by its All Mail folder (the service lists it
        # under that name): chosen when either is included and neither is excluded.
        archive = pseudo or next(
            (m for m in selectable if m.name == gmail_policy.ARCHIVE_NAME), None
        )
        c.archived = (
            all_mail is not None
            and archive is not None
            and (archive in included or all_mail in included)
            and archive in kept
            and all_mail in kept
        )
        chosen_ids = {id(m) for m in chosen}
        for m in candidates:
            if m.name in views:
                skipped.append((m.name, views[m.name]))
            elif m is pseudo and not c.archived:
                skipped.append((f"{m.name} (archived messages)", "excluded by --folder/--exclude"))
            elif id(m) not in chosen_ids and m is not pseudo:
                skipped.append((m.name, "excluded by --folder/--exclude"))
        if pseudo is not None and c.archived and pseudo not in chosen:
            chosen.append(pseudo)
        c.chosen = [m for m in chosen if m.name not in views and (m is not pseudo or c.archived)]
        c.folders = [m for m in c.chosen if m is not pseudo]
        return c

    def _archive_placement(
        self,
        pl: rule_policy.Placement,
        all_mail: MailboxInfo,
        label: bool,
        dst_all: MailboxInfo | None,
        dst_names: dict[str, MailboxInfo],
    ) -> rule_policy.Placement:
        """Where a Gmail source's archived messages go (policy/gmail.py): where the rules
        put a folder "Archive" (``label``: the source's own label "Archive", merged with
        it); to a Gmail destination's \\All folder instead of a new "Archive"."""
        reasons = [gmail_policy.archive_reason(all_mail.name)]
        if label:
            reasons.append(
                f"the source also has a label {gmail_policy.ARCHIVE_NAME!r}: they go to the "
                "same folder"
            )
        if (
            dst_all is not None
            and not label
            and pl.role == "archive"
            and norm_inbox(pl.dest) not in dst_names
        ):
            reasons.append(
                f"the destination is Gmail: archived messages go to its \\All folder "
                f"{dst_all.name!r}, where a message without labels is archived"
            )
            return dataclasses.replace(
                pl, dest=dst_all.name, reasons=tuple(reasons), create_use=None
            )
        # (The pseudo-folder's own "is the source's \\Archive folder" says nothing here.)
        own = f"{gmail_policy.ARCHIVE_NAME!r} is the source's"
        rest = tuple(r for r in pl.reasons if label or not r.startswith(own))
        return dataclasses.replace(pl, reasons=(*reasons, *rest), role="archive")

    async def _gmail_plan(
        self,
        src: Store,
        plans: list[FolderPlan],
        dst_names: dict[str, MailboxInfo],
        choice: _Choice,
        dst_gmail: bool,
        dst_all: MailboxInfo | None,
    ) -> GmailPlan:
        """The Gmail part of the plan; sets up the Gmail destination for the copy."""
        from .gmail import GmailDest  # only for a Gmail account (start-up)

        archive = next((fp for fp in plans if fp.archived_only), None)
        shared: list[str] = []
        appended: list[str] = []
        several: int | None = None
        instead: int | None = None
        if dst_gmail:
            for fp in plans:
                d = dst_names.get(norm_inbox(fp.dest_name))
                attrs = d.flags if d is not None else frozenset()
                (shared if gmail_policy.shares_labels(attrs, fp.role) else appended).append(
                    fp.source.name
                )
            self.ctx.gmail_shared = set(shared)
            self.ctx.gmail_dest = GmailDest(
                dst_all.raw if dst_all is not None else None, self.ctx.state
            )
            if self.ctx.options.dry_run:
                several, instead = await self._gmail_estimate(
                    src, [fp for fp in plans if fp.source.name in self.ctx.gmail_shared]
                )
        return GmailPlan(
            source=choice.src_gmail,
            dest=dst_gmail,
            views=tuple(choice.views),
            folder_labels=tuple(sorted(choice.labels)),
            archive=(archive.source.name, archive.dest_name) if archive is not None else None,
            archived=archive.count if archive is not None else 0,
            shared=tuple(shared),
            appended=tuple(appended),
            in_several_folders=several,
            labels_instead=instead,
        )

    async def _gmail_estimate(self, src: Store, plans: list[FolderPlan]) -> tuple[int, int]:
        """--dry-run into Gmail: (Gmail messages that get labels of several of these source
        folders, APPENDs that become labels), judged by size, INTERNALDATE and Message-ID
        (an estimate: no bodies are read)."""
        from .gmail import instant

        folders_of: dict[tuple[int, int, bytes | None], list[int]] = defaultdict(list)
        for i, fp in enumerate(plans):
            _info, metas = await list_source(self.ctx, src, fp)
            ids = await src.fetch_message_ids([m.uid for m in metas]) if metas else {}
            per: dict[tuple[int, int, bytes | None], int] = defaultdict(int)
            for m in metas:
                when = instant(m.internaldate)
                if when is not None:
                    per[(m.size, when, ids.get(m.uid))] += 1
            for k, n in per.items():
                folders_of[k].extend([i] * n)
        several = 0
        instead = 0
        for occurrences in folders_of.values():
            counts = Counter(occurrences)
            if len(counts) > 1:
                # As many Gmail messages as the folder holding it most often has copies;
                # the i-th of them gets a label from each folder with more than i copies.
                top = max(counts.values())
                several += sum(1 for i in range(top) if sum(n > i for n in counts.values()) > 1)
                instead += len(occurrences) - top
        return several, instead

    async def _counts(
        self, src: Store, chosen: Sequence[MailboxInfo]
    ) -> dict[bytes, tuple[int, int, tuple[str, ...]]]:
        """(messages, bytes, the folder's FLAGS) of each source folder, after the filters."""
        raws = [m.raw for m in chosen]
        out: dict[bytes, tuple[int, int, tuple[str, ...]]] = {}
        filters = self.ctx.options.filters
        if filters.active:
            # UID SEARCH on the source: the server's own date and size semantics.
            for raw in raws:
                info = await src.select(raw, readonly=True)
                uids = await src.uid_search(filters.criteria()) if info.exists else []
                sizes: list[tuple[int, int]] = []
                for chunk in chunks_by_count(uids, 2000):
                    sizes += await src.fetch_sizes(format_uid_set(chunk))
                out[raw] = (len(sizes), sum(s for _, s in sizes), info.flags)
            return out
        # Counts and sizes: one pipelined STATUS per folder (RFC 8438 SIZE).  A dry run
        # also reads the folders' FLAGS (EXAMINE, in the same round trip) to say which
        # flags the destination cannot store; a real run says it per folder as it copies
        # (FolderResult.unstorable_flags), and saves the server its EXAMINEs (item 22).
        preview = self.ctx.options.dry_run
        statuses: dict[bytes, dict[str, int]] | None = None
        infos: dict[bytes, SelectInfo | None] = {}
        if raws and src.has("STATUS=SIZE"):
            infos, statuses = await gather_all(
                src.select_many(raws, readonly=True) if preview else _nothing(),
                src.status_many(raws, "(MESSAGES SIZE)"),
            )
        elif raws and preview:
            infos = await src.select_many(raws, readonly=True)
        for raw in raws:
            info = infos.get(raw)
            count, size = await self._count(src, raw, statuses)
            out[raw] = (count, size, info.flags if info is not None else ())
        return out

    async def _count(
        self, src: Store, raw: bytes, statuses: dict[bytes, dict[str, int]] | None
    ) -> tuple[int, int]:
        st = statuses.get(raw) if statuses is not None else None
        if st is not None and "MESSAGES" in st and "SIZE" in st:
            return st["MESSAGES"], st["SIZE"]
        info = await src.select(raw, readonly=True)
        if not info.exists:
            return 0, 0
        sizes = await src.fetch_sizes()
        return len(sizes), sum(s for _, s in sizes)


_Entry = tuple[MailboxInfo, rule_policy.Placement, tuple[int, int, tuple[str, ...]], bool]


@dataclasses.dataclass
class _Sides:
    """Both sides' listings, as the planning reads them."""

    src_ns: NamespaceInfo
    src_boxes: list[MailboxInfo]
    src_subs: set[str]
    src_pol: folder_policy.Namespace
    dst_ns: NamespaceInfo
    dst_boxes: list[MailboxInfo]
    dst_names: dict[str, MailboxInfo]  # by name, INBOX normalised
    dst_pol: folder_policy.Namespace


@dataclasses.dataclass
class _Choice:
    """The source folders chosen, and a Gmail source's views and archive."""

    src_gmail: bool
    chosen: list[MailboxInfo] = dataclasses.field(default_factory=list)
    #: ``chosen`` without the archive's pseudo-folder
    folders: list[MailboxInfo] = dataclasses.field(default_factory=list)
    views: dict[str, str] = dataclasses.field(default_factory=dict)
    labels: frozenset[str] = frozenset()
    all_mail: MailboxInfo | None = None
    pseudo: MailboxInfo | None = None
    archived: bool = False


def _merged(entries: list[_Entry]) -> list[_Entry]:
    """Who is merged with whom, by final destination (the archive may have moved)."""
    by_dest: dict[str, list[str]] = defaultdict(list)
    for m, pl, _c, _a in entries:
        by_dest[norm_inbox(pl.dest)].append(m.name)
    return [
        (
            m,
            dataclasses.replace(
                pl, merged_with=tuple(n for n in by_dest[norm_inbox(pl.dest)] if n != m.name)
            ),
            c,
            a,
        )
        for m, pl, c, a in entries
    ]


def _folder_plans(
    entries: list[_Entry],
    dst_names: dict[str, MailboxInfo],
    src_subs: set[str],
    dst_infos: dict[bytes, SelectInfo | None],
    *,
    encode: Callable[[str], bytes] = utf7.encode,
) -> tuple[list[FolderPlan], list[tuple[str, bytes]]]:
    """The folder plans, and the destination folders to create (each once), their names
    spelled by ``encode`` (the destination's: UTF-8 after ENABLE UTF8=ACCEPT)."""
    plans: list[FolderPlan] = []
    create: list[tuple[str, bytes]] = []
    planned_create: set[str] = set()
    for m, pl, (count, size, src_flags), archived_only in entries:
        dest_name = pl.dest
        key = norm_inbox(dest_name)
        exists = key in dst_names
        # Parents are left to the server (RFC 3501 6.3.3: CREATE makes superiors),
        # so a source \\Noselect parent does not become a real folder here.
        if not exists and key not in planned_create:
            planned_create.add(key)
            create.append((dest_name, encode(dest_name)))
        dinfo = dst_infos.get(dst_names[key].raw if exists else b"INBOX")
        unstorable = tuple(
            sorted(
                f
                for f in src_flags
                if f.upper() != "\\RECENT" and dinfo is not None and not dinfo.can_store(f)
            )
        )
        untested = tuple(f for f in unstorable if not f.startswith("\\"))
        unstorable = tuple(f for f in unstorable if f.startswith("\\"))
        plans.append(
            FolderPlan(
                source=m,
                dest_name=dest_name,
                dest_raw=dst_names[key].raw if exists else encode(dest_name),
                reasons=pl.reasons,
                subscribed=m.name in src_subs,
                dest_exists=exists,
                count=count,
                size=size,
                role=pl.role,
                merged_with=pl.merged_with,
                unstorable_flags=unstorable,
                untested_keywords=untested,
                create_use=None if exists else pl.create_use,
                archived_only=archived_only,
            )
        )
    return plans, create


def select_folders(
    boxes: Sequence[MailboxInfo],
    include: Sequence[str],
    exclude: Sequence[str],
    namespace: folder_policy.Namespace | None = None,
) -> list[MailboxInfo]:
    """Apply --folder/--exclude.

    A pattern matches a folder by its exact name, as a parent (``Archive`` matches
    ``Archive/2019`` with the server's separator) or as a shell glob (``Archive/*``).
    INBOX matches case-insensitively.  With the source's ``namespace``, a pattern also
    matches the folder's path written as the folder rules write it (policy/rules.py:
    relative to the personal namespace, "/" between components), so ``Archive/2019``
    matches "INBOX.Archive.2019" on a Cyrus-style server.  A --folder pattern that
    matches nothing is an error.
    """

    def logical(name: str) -> str | None:
        if namespace is None:
            return None
        try:
            return "/".join(folder_policy.split_name(name, namespace))
        except ValueError:
            return None

    paths = {m.name: logical(m.name) for m in boxes}
    index = _FolderIndex(boxes, paths)
    wanted: set[int] | None = None
    if include:
        hits = [index.matching(p) for p in include]
        unknown = [p for p, hit in zip(include, hits, strict=True) if not hit]
        if unknown:
            names = ", ".join(sorted(m.name for m in boxes)) or "(none)"
            raise PlanError(
                "no source folder matches --folder "
                + ", ".join(repr(u) for u in unknown)
                + f"; the source has: {names}"
            )
        wanted = set().union(*hits)
    unwanted: set[int] = set().union(*(index.matching(p) for p in exclude))
    return [m for i, m in enumerate(boxes) if (wanted is None or i in wanted) and i not in unwanted]


def _pattern_matches(pattern: str, m: MailboxInfo, path: str | None) -> bool:
    """Whether --folder/--exclude ``pattern`` matches folder ``m`` (its rules-style
    ``path``): the definition (:func:`select_folders`); :class:`_FolderIndex` finds the
    same folders without trying every folder."""
    name = m.name
    if norm_inbox(pattern) == norm_inbox(name):
        return True
    sep = m.separator
    if sep and name.startswith(pattern + sep):
        return True
    if pattern.upper().startswith("INBOX" + (sep or "")) and sep:
        rest = pattern[5:]
        if name.upper().startswith("INBOX") and name[5:].startswith(rest):
            return True
    glob = any(ch in pattern for ch in "*?[")
    if glob and fnmatch.fnmatchcase(name, pattern):
        return True
    if path is None or path == name:
        return False
    head = pattern.partition("/")[0]
    pat = "INBOX" + pattern[5:] if head.upper() == "INBOX" else pattern
    return path == pat or path.startswith(pat + "/") or (glob and fnmatch.fnmatchcase(path, pat))


def _literal_glob(pattern: str) -> str | None:
    """The one string a glob made only of plain characters and one-character classes
    (``[A]rchive``, web/selection.py's ``exact_pattern``) matches; None for any other."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch in "*?":
            return None
        if ch == "[":
            if i + 2 < len(pattern) and pattern[i + 2] == "]" and pattern[i + 1] not in "!]-^\\":
                out.append(pattern[i + 1])
                i += 3
                continue
            return None
        out.append(ch)
        i += 1
    return "".join(out)


class _FolderIndex:
    """The folders indexed for :func:`_pattern_matches`: a pattern's folders by dict and
    sorted-prefix look-ups (O(log n + matches)), not by trying every folder (issue 14:
    20,000 folders and 10,000 patterns were 200 million tries).  General globs (``*``,
    ``?``, classes) still try every folder: they are typed by a person, a few at a time."""

    def __init__(self, boxes: Sequence[MailboxInfo], paths: dict[str, str | None]) -> None:
        self.boxes = boxes
        self.paths = paths
        self.by_norm: dict[str, list[int]] = defaultdict(list)
        self.by_path: dict[str, list[int]] = defaultdict(list)
        self.names: list[tuple[str, int]] = []
        self.inbox_tails: list[tuple[str, int]] = []
        self.path_list: list[tuple[str, int]] = []
        self.seps: set[str] = set()
        for i, m in enumerate(boxes):
            name = m.name
            self.by_norm[norm_inbox(name)].append(i)
            self.names.append((name, i))
            if m.separator:
                self.seps.add(m.separator)
            if name.upper().startswith("INBOX"):
                self.inbox_tails.append((name[5:], i))
            path = paths.get(name)
            if path is not None and path != name:
                self.by_path[path].append(i)
                self.path_list.append((path, i))
        self.names.sort()
        self.inbox_tails.sort()
        self.path_list.sort()

    @staticmethod
    def _prefixed(items: list[tuple[str, int]], prefix: str) -> list[int]:
        lo = bisect.bisect_left(items, (prefix, -1))
        out = []
        for k in range(lo, len(items)):
            key, i = items[k]
            if not key.startswith(prefix):
                break
            out.append(i)
        return out

    def matching(self, pattern: str) -> set[int]:
        """The indices of the folders ``pattern`` matches."""
        boxes = self.boxes
        glob = any(ch in pattern for ch in "*?[")
        literal = _literal_glob(pattern) if glob else None
        if glob and literal is None:  # a general glob: try every folder
            return {
                i
                for i, m in enumerate(boxes)
                if _pattern_matches(pattern, m, self.paths.get(m.name))
            }
        hit = set(self.by_norm.get(norm_inbox(pattern), ()))
        for sep in self.seps:
            hit.update(
                i for i in self._prefixed(self.names, pattern + sep) if boxes[i].separator == sep
            )
            if pattern.upper().startswith("INBOX" + sep):
                hit.update(
                    i
                    for i in self._prefixed(self.inbox_tails, pattern[5:])
                    if boxes[i].separator == sep
                )
        if literal is not None:
            hit.update(
                i for i in self.by_norm.get(norm_inbox(literal), ()) if boxes[i].name == literal
            )
        head = pattern.partition("/")[0]
        pat = "INBOX" + pattern[5:] if head.upper() == "INBOX" else pattern
        hit.update(self.by_path.get(pat, ()))
        hit.update(self._prefixed(self.path_list, pat + "/"))
        if literal is not None:
            lpat = _literal_glob(pat)
            if lpat is not None:
                hit.update(self.by_path.get(lpat, ()))
        return hit
