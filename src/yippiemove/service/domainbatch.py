"""The Service's domain-wide moves (issue 16): the customers' admin credentials (stored
encrypted, never shown back, deletable) and batches of a whole domain from a list of
addresses, each job with its own per-user grant (docs/service.md "Domain-wide moves").

A mixin of :class:`~yippiemove.service.core.Service` (it uses its database, credential
box, account checks and job creation).
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from .db import DomainCredential
from .domain import DomainError, grant_for, imap_server, in_domain, parse_credential

if TYPE_CHECKING:
    from .core import Account

log = logging.getLogger("yippiemove.service")

__all__ = ["DomainBatches", "DomainLine"]

#: Account checks of one domain batch in flight at once (each is a child process; the
#: default ``checks_per_user`` is 2).
DOMAIN_CHECKS_AT_ONCE = 2
#: A line's check waits for a free check slot (the customer's other checks, a page's)
#: this many times, ``BUSY_WAIT`` seconds apart, before it is refused as busy.
BUSY_TRIES = 120
BUSY_WAIT = 0.5


@dataclass(frozen=True)
class DomainLine:
    """One mailbox of a domain batch: its line number (1-based) and both accounts."""

    line: int
    address: str
    source: Account
    dest: Account
    #: The checked job spec (``Service.make_spec``) of this line.
    spec: Any = field(default=None, repr=False)
    #: Billing on (issue 20): the quote its check made (the source as measured).
    quote_id: str | None = None


def _view(row: DomainCredential) -> dict[str, Any]:
    """What the customer sees of a credential: never its secret part."""
    return {
        "id": row.id,
        "kind": row.kind,
        "provider": row.provider,
        "label": row.label,
        "principal": row.principal,
        "tenant": row.tenant,
        "domain": row.domain,
        "created": row.created,
    }


class DomainBatches:
    """Domain credentials and domain batches (mixed into Service)."""

    # -------------------------------------------------------------- OAuth settings

    def oauth_config(self) -> Any:
        """The operator's OAuth2 settings (``yippiemove.oauth.OAuthConfig.from_env``),
        read once; None when the oauth layer is not there."""
        return self.settings.oauth_config()  # type: ignore[attr-defined]

    def _token_urls(self) -> dict[str, str]:
        config = self.oauth_config()
        out: dict[str, str] = {}
        for key in ("google", "microsoft"):
            prov = _provider(config, key)
            if prov is not None and getattr(prov, "token_url", None):
                out[key] = str(prov.token_url)
        return out

    # -------------------------------------------------------------- credentials

    def add_domain_credential(self, user_id: int, data: Any) -> dict[str, Any]:
        """Check and store a customer's admin credential (``domain.parse_credential``);
        its secret part encrypted.  Returns what may be shown (id, kind, label,
        principal, tenant, domain), never the secret."""
        from .core import ServiceError

        svc: Any = self
        svc.user_email(user_id)
        try:
            cred = parse_credential(data, token_urls=self._token_urls())
        except DomainError as exc:
            raise ServiceError(str(exc)) from None
        row = DomainCredential(
            id=uuid.uuid4().hex,
            user_id=user_id,
            kind=cred.kind,
            provider=cred.provider,
            label=cred.label,
            principal=cred.principal,
            tenant=cred.tenant,
            domain=cred.domain,
            secret=svc.box.encrypt(cred.secret),
            created=time.time(),
        )
        with svc.db.session() as s:
            s.add(row)
            s.flush()
            view = _view(row)
        log.info("domain credential %s (%s) added for user %d", row.id, row.kind, user_id)
        return view

    def list_domain_credentials(self, user_id: int) -> list[dict[str, Any]]:
        svc: Any = self
        with svc.db.read() as s:
            rows = s.scalars(
                select(DomainCredential)
                .where(DomainCredential.user_id == user_id)
                .order_by(DomainCredential.created, DomainCredential.id)
            )
            return [_view(r) for r in rows]

    def get_domain_credential(self, user_id: int, cred_id: str) -> dict[str, Any]:
        svc: Any = self
        with svc.db.read() as s:
            return _view(self._own_credential(s, user_id, cred_id))

    def delete_domain_credential(self, user_id: int, cred_id: str) -> None:
        """Delete a credential and its secret (jobs made with it keep their own grant
        until they end and their credentials are wiped)."""
        import contextlib

        svc: Any = self
        with svc.db.session() as s:
            s.delete(self._own_credential(s, user_id, cred_id))
        with contextlib.suppress(Exception):
            svc.db.checkpoint()  # the secret out of the WAL too
        log.info("domain credential %s deleted by user %d", cred_id, user_id)

    def _own_credential(self, s: Any, user_id: int, cred_id: Any) -> DomainCredential:
        from .core import NotFound

        if not isinstance(cred_id, str) or not cred_id or len(cred_id) > 32:
            raise NotFound("no such domain credential")
        row = s.get(DomainCredential, cred_id)
        if row is None or row.user_id != user_id:
            raise NotFound("no such domain credential")
        return row

    # -------------------------------------------------------------- batches

    def _side(
        self, s: Any, user_id: int, data: Any, role: str
    ) -> tuple[DomainCredential | None, dict[str, Any], dict[str, Any] | None]:
        """One side of a domain batch: (credential row or None, server, its secret)."""
        from .core import ServiceError

        if not isinstance(data, Mapping):
            raise ServiceError(
                f"{role}: must be an object: a domain credential "
                '({"credential": ID}) or a server ({"host", "port", "security"})'
            )
        unknown = sorted(set(data) - {"credential", "host", "port", "security"})
        if unknown:
            raise ServiceError(f"{role}.{unknown[0]}: unknown field")
        row = None
        secret = None
        server: dict[str, Any] = {}
        if data.get("credential") not in (None, ""):
            row = self._own_credential(s, user_id, data["credential"])
            svc: Any = self
            secret = svc.box.decrypt(row.secret)
            try:
                server = imap_server(row.provider)
            except DomainError as exc:
                raise ServiceError(f"{role}: {exc}") from None
        elif role == "source":
            raise ServiceError("source.credential: is required (a domain credential's id)")
        for key in ("host", "port", "security"):
            if data.get(key) not in (None, ""):
                server[key] = data[key]
        if "host" not in server:
            raise ServiceError(f"{role}.host: is required")
        return row, server, secret

    def validate_domain_batch(
        self, user_id: int, request: Any, line_numbers: list[int] | None = None
    ) -> tuple[list[DomainLine], list[str], dict[str, Any] | None]:
        """Parse and check a domain batch (the API's and the batch page's request):

        ``{"source": {"credential": ID, "host"?, "port"?, "security"?}, "dest":
        {"credential": ID, ...} or {"host", "port"?, "security"?}, "users": [ADDRESS or
        {"address", "dest_address"?, "dest_username"?, "dest_password"?}...],
        "folders"?: {...}}``.  With a destination credential each user's destination is
        ``dest_address`` (default: the same local part in its domain); with a server,
        ``dest_username`` (default: the address) and ``dest_password`` (required).

        Returns the good lines, errors ``"line N: ADDRESS: ..."`` for the others (never
        a secret), and the folder selection.  No server is contacted here."""
        from ..jobs import spec
        from .core import Account, ServiceError

        svc: Any = self
        svc.user_email(user_id)
        if not isinstance(request, Mapping):
            raise ServiceError("batch: must be an object with source, dest and users")
        unknown = sorted(set(request) - {"source", "dest", "users", "folders"})
        if unknown:
            raise ServiceError(f"{unknown[0]}: unknown field")
        users = request.get("users")
        if not isinstance(users, list) or not users:
            raise ServiceError("users: must be a list of at least one address")
        limit = svc.settings.batch_max_transfers
        if limit > 0 and len(users) > limit:
            raise ServiceError(f"users: at most {limit} per batch; split the list")
        folders = request.get("folders")
        try:
            folders = spec.check_folders(folders)
        except spec.SpecError as exc:
            raise ServiceError(str(exc)) from None
        with svc.db.read() as s:
            src_row, src_server, src_secret = self._side(
                s, user_id, request.get("source"), "source"
            )
            dst_row, dst_server, dst_secret = self._side(s, user_id, request.get("dest"), "dest")
        assert src_row is not None and src_secret is not None
        lines: list[DomainLine] = []
        errors: list[str] = []
        pinned: dict[tuple[str, int], str | None] = {}
        seen: set[str] = set()
        numbers = line_numbers if line_numbers and len(line_numbers) == len(users) else None
        for i, item in enumerate(users):
            n = numbers[i] if numbers is not None else i + 1
            if isinstance(item, str):
                item = {"address": item}
            where = f"line {n}"
            try:
                if not isinstance(item, Mapping):
                    raise ServiceError("must be an address or an object with address")
                bad = sorted(
                    set(item) - {"address", "dest_address", "dest_username", "dest_password"}
                )
                if bad:
                    raise ServiceError(f"{bad[0]}: unknown field")
                raw = item.get("address")
                where = f"line {n}: {str(raw).strip()[:320]}" if isinstance(raw, str) else where
                address = in_domain(raw, src_row.domain)
                if address.lower() in seen:
                    raise ServiceError("is in the list twice")
                seen.add(address.lower())
                source = Account.from_dict(
                    dict(
                        src_server,
                        username=address,
                        oauth=grant_for(
                            src_row.kind,
                            src_row.provider,
                            src_secret,
                            src_row.tenant,
                            src_row.principal,
                            address,
                        ),
                    ),
                    "source",
                )
                if dst_row is not None:
                    assert dst_secret is not None
                    other = item.get("dest_address") or (
                        address.rpartition("@")[0] + "@" + dst_row.domain
                    )
                    dest_address = in_domain(other, dst_row.domain)
                    dest = Account.from_dict(
                        dict(
                            dst_server,
                            username=dest_address,
                            oauth=grant_for(
                                dst_row.kind,
                                dst_row.provider,
                                dst_secret,
                                dst_row.tenant,
                                dst_row.principal,
                                dest_address,
                            ),
                        ),
                        "dest",
                    )
                else:
                    password = item.get("dest_password")
                    if not isinstance(password, str) or not password:
                        raise ServiceError(
                            "dest_password: is required (the destination is not a domain "
                            "credential)"
                        )
                    username = item.get("dest_username") or address
                    dest = Account.from_dict(
                        dict(dst_server, username=username, password=password), "dest"
                    )
                job = svc.make_spec(source, dest, folders, pinned=pinned)
            except (ServiceError, DomainError) as exc:
                errors.append(f"{where}: {exc}")
                continue
            lines.append(DomainLine(n, address, job.source, job.dest, job))
        return lines, errors, folders

    async def check_domain_lines(
        self, user_id: int, lines: list[DomainLine]
    ) -> tuple[list[DomainLine], list[str]]:
        """Each line's accounts checked before anything starts: a token had and a login
        made on both sides (the account check, in its child process).  Returns the lines
        that passed and ``"line N: ADDRESS: why"`` for the others."""
        from .core import Busy, ServiceError

        svc: Any = self
        gate = asyncio.Semaphore(DOMAIN_CHECKS_AT_ONCE)

        billing = getattr(svc, "billing", None)
        priced = billing is not None and billing.enabled
        quotes: dict[int, str] = {}

        async def one(line: DomainLine) -> str | None:
            async with gate:
                for attempt in range(BUSY_TRIES):
                    try:
                        folders = line.spec.folders.as_dict() if line.spec.folders else None
                        listed = await svc.check_account(
                            line.source,
                            role="source",
                            dest=line.dest,
                            user_id=user_id,
                            folders=folders,
                        )
                    except Busy as exc:  # the customer's other checks (a page): wait
                        if attempt == BUSY_TRIES - 1:
                            return f"line {line.line}: {line.address}: {exc}"
                        await asyncio.sleep(BUSY_WAIT)
                        continue
                    except ServiceError as exc:
                        return f"line {line.line}: {line.address}: {exc}"
                    if priced:  # issue 20: the line's price, from what was measured
                        chosen = [f for f in listed if folders is None or f.selected]
                        quote = await asyncio.to_thread(
                            billing.make_quote,
                            user_id,
                            billing.subject(user_id, line.source, folders),
                            sum(int(f.bytes or 0) for f in chosen),
                            sum(int(f.messages or 0) for f in chosen),
                        )
                        quotes[line.line] = quote.id
                    return None
                return None

        results = await asyncio.gather(*(one(line) for line in lines))
        good = [
            replace(line, quote_id=quotes.get(line.line))
            for line, err in zip(lines, results, strict=True)
            if err is None
        ]
        return good, [err for err in results if err is not None]

    async def create_domain_batch(
        self,
        user_id: int,
        request: Any,
        *,
        check: bool = True,
        line_numbers: list[int] | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        """A domain batch: validated, each line checked (``check``), a job per good
        line with its own grant.  Returns ``{"created": [job ids], "errors": ["line N:
        ..."], "failed": [...]}``: ``errors`` for lines refused before a job (bad
        address, a mailbox the credential cannot sign in to), ``failed`` for lines
        whose job could not be created (already running, too many pending).
        ``line_numbers``: the number each user has in the customer's text (the batch
        page's box, where blank and ``#`` lines are skipped); default 1, 2, 3...

        ``wait=False`` (issue 17): a batch of service/batches.py instead, answered at
        once (its view) while its lines are checked in the background; lines that are
        not in a usable shape refuse it whole (nothing stored)."""
        from .core import ServiceError

        svc: Any = self
        lines, errors, folders = await asyncio.to_thread(
            self.validate_domain_batch, user_id, request, line_numbers
        )
        if not wait:
            if errors:
                raise ServiceError("nothing was stored: " + "; ".join(errors[:20]))
            rows = [(line.line, line.source, line.dest) for line in lines]
            return await asyncio.to_thread(
                lambda: svc.create_batch(user_id, rows, kind="domain", folders=folders, check=check)
            )
        if check and lines:
            lines, refused = await self.check_domain_lines(user_id, lines)
            errors = sorted(errors + refused, key=_line_no)
        created: list[str] = []
        failed: list[str] = []
        batch: str | None = None  # issue 17: one summary mail for the batch
        for line in lines:
            try:
                view = await asyncio.to_thread(
                    svc.submit, user_id, line.spec, None, line.quote_id
                )
            except ServiceError as exc:
                failed.append(f"line {line.line}: {line.address}: {exc}")
                continue
            created.append(view.id)
            batch = await asyncio.to_thread(svc.tag_batch, user_id, [view.id], batch)
        log.info(
            "domain batch for user %d: %d created, %d refused, %d failed",
            user_id,
            len(created),
            len(errors),
            len(failed),
        )
        return {"created": created, "errors": errors, "failed": failed}


def _line_no(error: str) -> int:
    head = error.split(":", 1)[0]
    try:
        return int(head.removeprefix("line "))
    except ValueError:
        return 0


def _provider(config: Any, key: str) -> Any:
    """The provider ``key`` of an OAuthConfig (None if unknown or no config)."""
    providers = getattr(config, "providers", None)
    return providers.get(key) if isinstance(providers, Mapping) else None


def parse_user_lines(
    text: str, *, dest_is_credential: bool
) -> tuple[list[Any], list[str], list[int]]:
    """The batch page's text box: one mailbox a line, ``ADDRESS`` or, with a
    destination credential, ``ADDRESS,DEST_ADDRESS``, with a destination server
    ``ADDRESS,DEST_USERNAME,DEST_PASSWORD`` (CSV: a password with a comma is quoted).
    Blank lines and ``#`` lines are skipped.  The items for :meth:`validate_domain_batch`'s
    ``users``, errors for lines that are not that shape, and each item's line number."""
    users: list[Any] = []
    errors: list[str] = []
    numbers: list[int] = []
    reader = csv.reader(io.StringIO(text))
    for cells in reader:
        if not cells or all(not c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
            continue
        if dest_is_credential:
            if len(cells) > 2:
                errors.append(f"line {reader.line_num}: expected ADDRESS or ADDRESS,DEST_ADDRESS")
                continue
            item: dict[str, str] = {"address": cells[0].strip()}
            if len(cells) == 2 and cells[1].strip():
                item["dest_address"] = cells[1].strip()
        else:
            if len(cells) != 3:
                errors.append(
                    f"line {reader.line_num}: expected ADDRESS,DEST_USERNAME,DEST_PASSWORD"
                )
                continue
            item = {
                "address": cells[0].strip(),
                "dest_username": cells[1].strip(),
                "dest_password": cells[2],
            }
        users.append(item)
        numbers.append(reader.line_num)
    return users, errors, numbers
