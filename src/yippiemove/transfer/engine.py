"""The transfer engine: plan, copy, verify -- one account to another.

Theory of operation
-------------------
1. **Plan.**  List both sides (LIST, LSUB, NAMESPACE), select the source folders the user
   asked for, map each name to the destination's namespace and separator
   (:mod:`yippiemove.policy.folders`), and count messages and bytes.
2. **Copy**, folder by folder, by ``Options.connections`` workers that each hold one
   source and one destination connection.  For one folder:

   * list both sides' metadata (UID, size, flags, INTERNALDATE, Message-ID; no bodies);
   * *claim* destination messages that the state file says we put there (same size);
   * any other source message whose (size, Message-ID) matches an unclaimed destination
     message is *ambiguous*: the candidates' bodies are fetched and hashed, and the source
     message is only appended when no unclaimed destination message has the same bytes.
     This is what makes a re-run after a crash, a lost state file, or an APPEND whose
     answer never arrived exact: nothing missing, nothing doubled, multiplicity kept;
   * everything else is fetched in pipelined ``UID FETCH`` batches sized by bytes and
     appended with pipelined MULTIAPPEND (RFC 3502) + LITERAL+ (RFC 7888) into the
     SELECTed destination folder; a refused MULTIAPPEND (all-or-nothing) is retried one
     message at a time to find and report the refused message with the server's words;
   * outcomes (with APPENDUID destination UIDs, RFC 4315) go to the state file in batches.
3. **Verify.**  The destination folder is listed again and every source message must have
   its own destination message with the same size, flags and INTERNALDATE; flags that
   differ are set (UID STORE), anything else is reported.

A folder pass is idempotent, so a transient failure (dropped connection, timeout,
``* BYE``, ``NO [UNAVAILABLE]``, a provider's throttling answer) is handled by waiting,
reconnecting and running the pass again, a bounded number of times; the planning is
retried the same way.  What is retried, how long it waits and what stops the transfer
is decided by :mod:`yippiemove.policy.retry`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from typing import Any

from ..imap.errors import HostUnreachable, ImapError
from ..policy import retry as retry_policy
from .budget import ByteBudget
from .context import Context, EventHandler, Tally, norm_inbox
from .destination import prepare_destination
from .folder import FolderPass, PassHooks, PlainHooks
from .hashing import fingerprint
from .identity import SameMailbox, same_address
from .model import Endpoint, FolderPlan, FolderResult, Options, Phase, Plan, Progress
from .pairs import Connector, Pair, StoreFactory
from .plan import Planner, select_folders
from .refusals import FolderError, PlanError
from .state import State
from .store import Store

__all__ = ["ByteBudget", "Mover", "PlanError", "fingerprint", "select_folders"]


class Mover:
    """Moves one mailbox.  ``run()`` returns per-folder results; it raises
    :class:`ImapError` when the transfer could not start or was cut short.

    ``stores`` opens an account (default: an IMAP connection, transfer/store.py); tests
    pass one that gives in-memory stores."""

    def __init__(
        self,
        source: Endpoint,
        dest: Endpoint,
        *,
        state: State | None = None,
        options: Options | None = None,
        progress: Progress | None = None,
        on_event: EventHandler | None = None,
        stores: StoreFactory | None = None,
    ) -> None:
        self.source = source
        self.dest = dest
        self.options = options or Options()
        self.progress = progress or Progress()
        self.on_event = on_event or (lambda msg: None)
        self.plan: Plan | None = None
        self.results: list[FolderResult] = []
        self._folder_errors: dict[str, str] = {}
        budget = ByteBudget(self.options.memory_budget)
        self.ctx = Context(
            self.options, state, self.progress, self.on_event, budget, Tally(self.progress)
        )
        self.connector = Connector(source, dest, self.options, budget, self.on_event, stores)
        self.planner = Planner(self.ctx)
        #: Waits between attempts (policy/retry.py); tests may seed ``backoff.rng``.
        self.backoff = retry_policy.Backoff(cap=self.options.max_backoff, rng=random.Random())
        self._throttles: dict[object, float] = {}

    @property
    def state(self) -> State | None:
        """The job's state database (transfer/state.py), if any; may be set before run()."""
        return self.ctx.state

    @state.setter
    def state(self, state: State | None) -> None:
        self.ctx.state = state

    @property
    def budget(self) -> ByteBudget:
        """Message bytes in flight across all workers (transfer/budget.py)."""
        return self.ctx.budget

    @budget.setter
    def budget(self, budget: ByteBudget) -> None:
        self.ctx.budget = self.connector.budget = budget

    @property
    def rtt(self) -> float | None:
        """Seconds of a round trip to the farther server (NOOPs while planning), if measured."""
        return self.connector.rtt

    async def connect(self, ep: Endpoint, role: str, *, read_only: bool | None = None) -> Store:
        """Open one account; read-only for the ``"source"`` role or ``read_only=True``."""
        return await self.connector.connect(ep, role, read_only=read_only)

    async def open_pair(self) -> Pair:
        return await self.connector.open_pair()

    async def make_plan(self, src: Store, dst: Store) -> Plan:
        """List both sides and plan the transfer (transfer/plan.py)."""
        return await self.planner.make_plan(src, dst)

    def folder_progress(self) -> dict[str, tuple[int, int, int]]:
        """(messages, bytes, failed) done so far per source folder in its latest pass;
        the bytes include those of its APPENDs on their way (``Progress.sending``).

        A folder that has not started is absent.  For front doors that show progress
        folder by folder (the service's job process).
        """
        flying = self.progress.sending_by_folder()
        return {
            name: (m, b + flying.get(name, 0), f)
            for name, (m, b, f) in self.ctx.tally.by_folder().items()
        }

    # ------------------------------------------------------------------ run

    async def run(self) -> list[FolderResult]:
        """Plan, then (unless dry-run) copy and verify every planned folder."""
        effort = retry_policy.Effort(self.options.retries, self.backoff)
        why = await asyncio.to_thread(same_address, self.source, self.dest)
        if why is not None:
            raise SameMailbox(why)
        while True:
            try:
                plan = await self._setup()
                break
            except ImapError as exc:
                verdict = retry_policy.classify(exc)
                both = {(ep.host, ep.port) for ep in (self.source, self.dest)}
                if isinstance(exc, HostUnreachable) and not both <= self.connector.reached:
                    raise  # never reached: a wrong host or port, say so at once
                wait = effort.next_wait(verdict)
                if wait is None:
                    raise effort.give_up("planning", exc, verdict) from exc
                await self._pause("planning", exc, verdict, wait, effort)
        if self.options.dry_run:
            return []
        return await self._copy_all(plan)

    async def _pause(
        self,
        what: str,
        exc: BaseException,
        verdict: retry_policy.Verdict,
        seconds: float,
        effort: retry_policy.Effort,
    ) -> None:
        """Say why and wait before the next attempt; a throttled wait shows in progress."""
        self.progress.reconnects += 1
        until = time.time() + seconds
        self.progress.retry_until = max(self.progress.retry_until or 0.0, until)
        clock = time.strftime("%H:%M:%S", time.localtime(until))
        if verdict.kind == retry_policy.THROTTLED:
            head = f"{what}: throttled ({verdict.why}): {exc}; waiting {seconds:.1f} s"
        else:
            head = f"{what}: {exc}; retrying in {seconds:.1f} s"
        self.on_event(
            f"{head} (until {clock}; attempt {effort.failures} of {effort.attempts} "
            "without progress)"
        )
        if verdict.kind != retry_policy.THROTTLED:
            await asyncio.sleep(seconds)
            return
        token = object()
        self._throttles[token] = until
        self.progress.throttled_until = max(self._throttles.values())
        try:
            await asyncio.sleep(seconds)
        finally:
            del self._throttles[token]
            self.progress.throttled_until = max(self._throttles.values(), default=None)

    async def _setup(self) -> Plan:
        """One attempt at connecting, planning, and creating and subscribing the
        destination folders (all idempotent).

        The other workers' connections open while the plan is made (the planning pair
        itself becomes the first worker's), and far servers get more workers: a NOOP
        to each side goes out before the planning commands, so that its round trip is
        not also theirs (transfer/pairs.py).  Long for a reason: every connection
        opened here must end up a spare pair or closed, whatever fails."""
        conn = self.connector
        self._folder_errors = {}
        conn.drop_spares()
        src, dst = await conn.open_pair()
        dry = self.options.dry_run
        extra = (
            []
            if dry
            else [
                asyncio.ensure_future(conn.open_pair()) for _ in range(self.options.connections - 1)
            ]
        )
        far = (
            None
            if dry
            else asyncio.ensure_future(
                conn.probe(
                    src, dst, time.monotonic(), await src.submit_noop(), await dst.submit_noop()
                )
            )
        )
        keep = False
        try:
            # The planning refuses the same mailbox under another name before anything
            # is written (transfer/identity.py; a PlanError: never retried).
            self.plan = plan = await self.make_plan(src, dst)
            if dry:
                return plan
            await prepare_destination(
                dst, plan, self.planner.dst_subscribed, self._folder_errors, self.on_event
            )
            keep = not (src.closed or dst.closed)
        finally:
            if far is not None:
                if not keep:
                    far.cancel()
                (grown,) = await asyncio.gather(far, return_exceptions=True)
                if isinstance(grown, list):
                    extra += [_done(pair) for pair in grown]
            if extra:
                if not keep:
                    for t in extra:
                        t.cancel()
                done = await asyncio.gather(*extra, return_exceptions=True)
                for pair in done:
                    if isinstance(pair, tuple):
                        if keep:
                            conn.spares.append(pair)
                        else:
                            for c in pair:
                                c.abort()
            if keep:
                conn.spares.append((src, dst))
            else:
                await src.logout()
                await dst.logout()
        return plan

    async def _copy_all(self, plan: Plan) -> list[FolderResult]:
        """Copy and verify every planned folder with ``Options.connections`` workers."""
        self.progress.phase = Phase.COPYING
        # Folders merged into one destination folder go to one worker, one after the
        # other: two workers appending to one folder would race the duplicate check.
        groups: dict[str, list[FolderPlan]] = defaultdict(list)
        for fp in plan.folders:
            groups[norm_inbox(fp.dest_name)].append(fp)
        queue: asyncio.Queue[list[FolderPlan]] = asyncio.Queue()
        for group in sorted(groups.values(), key=lambda g: -sum(f.size for f in g)):
            # The folder named like the destination first (its flags win, see FolderPass).
            group.sort(key=lambda f: (f.source.name != f.dest_name, f.source.name))
            queue.put_nowait(group)
        # As many workers as connection pairs were opened (more on a far link, _setup).
        spares = self.connector.spares
        workers = max(1, min(max(self.options.connections, len(spares)), len(groups)))
        await self.connector.logout_spares(keep=workers)  # fewer folders than connections
        results: dict[str, FolderResult] = {}
        tasks = [asyncio.create_task(self._worker(queue, results)) for _ in range(workers)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            await self.connector.logout_spares()  # more pairs than folders to copy
            self.ctx.hasher.shutdown()
            if self.ctx.state is not None:
                self.ctx.state.flush()
        self.results = [results[f.source.name] for f in plan.folders]
        self.progress.phase = Phase.DONE
        return self.results

    def hooks_for(self, fp: FolderPlan) -> PassHooks:
        """What the destination adds to a folder pass (Gmail's labels, or nothing)."""
        gd = self.ctx.gmail_dest
        if gd is None:
            return PlainHooks()
        from .gmail_pass import GmailHooks  # only for a Gmail account (start-up)

        return GmailHooks(gd, fp.source.name in self.ctx.gmail_shared)

    async def sync_folder(self, src: Store, dst: Store, fp: FolderPlan) -> FolderResult:
        """One idempotent pass over one folder: match, copy what is missing, verify."""
        return await FolderPass(self.ctx, src, dst, fp, self.hooks_for(fp)).run()

    async def _worker(
        self, queue: asyncio.Queue[list[FolderPlan]], results: dict[str, FolderResult]
    ) -> None:
        """Takes groups of folders off the queue and runs their passes, each retried on
        transient errors (policy/retry.py) with fresh connections."""
        conn = self.connector
        pair: list[Store | None] = list(conn.spares.pop()) if conn.spares else [None, None]
        pending: list[FolderPlan] = []  # the rest of a group of merged folders
        try:
            while True:
                if not pending:
                    try:
                        pending = list(queue.get_nowait())
                    except asyncio.QueueEmpty:
                        return
                fp = pending.pop(0)
                res = await self._folder_with_retries(fp, pair)
                results[fp.source.name] = res
                self.progress.finished[fp.source.name] = "failed" if res.error else "done"
                self.progress.folders_done += 1
        except asyncio.CancelledError:
            # Cut short (Ctrl-C, a cancelled job): a command may be half written (an
            # APPEND literal), so a LOGOUT could only time out. Drop the connections.
            for c in pair:
                if c is not None:
                    c.abort()
            raise
        finally:
            for c in pair:
                if c is not None:
                    await c.logout()

    async def _folder_with_retries(self, fp: FolderPlan, pair: list[Store | None]) -> FolderResult:
        """One folder's passes until one completes; ``pair`` holds the worker's
        (source, destination) stores, reopened here when they were dropped."""
        conn = self.connector
        tally = self.ctx.tally
        name = fp.source.name
        effort = retry_policy.Effort(self.options.retries, self.backoff)
        while True:
            try:
                src, dst = pair
                src_ok = src is not None and not src.closed
                dst_ok = dst is not None and not dst.closed
                if not src_ok and not dst_ok:
                    pair[:] = await conn.open_pair()
                elif not src_ok:
                    pair[0] = await conn.connect(self.source, "source")
                elif not dst_ok:
                    pair[1] = await conn.connect(self.dest, "destination")
                src, dst = pair
                assert src is not None and dst is not None
                self.progress.current.add(name)
                tally.start(name)
                if name in self._folder_errors:
                    return self._failed_folder(fp)
                try:
                    return await self.sync_folder(src, dst, fp)
                except FolderError as exc:
                    tally.undo(fp)
                    self._folder_errors[name] = str(exc)
                    self.on_event(f"{name}: {exc}")
                    return self._failed_folder(fp)
            except ImapError as exc:
                # How far this pass got (messages handled): a pass that got further
                # than all before it is progress (policy/retry.py).
                reached = tally.reached(name)
                tally.undo(fp)
                verdict = retry_policy.classify(exc)
                wait = effort.next_wait(verdict, reached)
                if wait is None:
                    raise effort.give_up(f"folder {name!r}", exc, verdict) from exc
                for c in pair:
                    if c is not None:
                        c.abort()
                pair[:] = [None, None]
                await self._pause(name, exc, verdict, wait, effort)
            finally:
                self.progress.current.discard(name)

    def _failed_folder(self, fp: FolderPlan) -> FolderResult:
        res = FolderResult(fp.source.name, fp.dest_name, source_count=fp.count)
        res.error = self._folder_errors[fp.source.name]
        res.failed = fp.count
        self.progress.failed += fp.count
        self.progress.messages_done += fp.count
        self.progress.bytes_done += fp.size
        return res


def _done(value: Any) -> asyncio.Future[Any]:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_result(value)
    return fut
