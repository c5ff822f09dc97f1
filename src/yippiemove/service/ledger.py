"""The credit ledger (issue 20, docs/billing.md): every movement of credits is a row of
``ledger_entries``, and an account's balance is their sum, never a stored number.

- Amounts are integers in minor units (cents) of the installation's currency; this
  module never names a currency.
- ``key`` names an entry's cause (a payment's id, ``refund:<job>``, an order's spend...)
  and is unique per account: posting the same cause again inserts nothing and returns
  None, so a replayed webhook or a second refund of one job changes nothing.
- A spend never overspends: in one transaction it takes the account's row as a lock
  (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the service's writers already run
  one at a time: :meth:`Database.session` begins them with ``BEGIN IMMEDIATE``, behind a
  lock of the process), sums the balance and inserts the spend only if it is covered.

Every function works inside the caller's transaction (a :meth:`Database.session`, a
writer, for those that write) and commits nothing itself.  No web imports here.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .db import BillingAccount, LedgerEntry

__all__ = [
    "KINDS",
    "InsufficientCredit",
    "account_for_user",
    "balance",
    "entries",
    "post",
    "spend",
]

#: The kinds of entries: credits in (grant, purchase, refund), out (spend), either (adjust).
KINDS = ("grant", "purchase", "spend", "refund", "adjust")
#: Longest key and note (the columns' lengths).
KEY_MAX = 255
NOTE_MAX = 500
#: Longest page of :func:`entries`.
ENTRIES_MAX = 1000


class InsufficientCredit(Exception):
    """A spend (or a negative adjustment) larger than the account's balance."""

    def __init__(self, account_id: int, balance: int, amount: int) -> None:
        self.account_id = account_id
        self.balance = balance
        self.amount = amount
        super().__init__(
            f"insufficient credit: account {account_id} has a balance of {balance}, "
            f"less than the {amount} asked (minor units)"
        )


def account_for_user(session: Session, user_id: int) -> int:
    """The id of the customer's billing account, made on first use.

    Race-safe: two transactions making it at once end with one row (the unique
    ``user_id``; the loser's insert is undone to a savepoint and it reads the winner's)."""
    found = session.scalar(select(BillingAccount.id).where(BillingAccount.user_id == user_id))
    if found is not None:
        return found
    account = BillingAccount(user_id=user_id)
    try:
        with session.begin_nested():
            session.add(account)
    except IntegrityError:
        # Another transaction made it first (PostgreSQL: our insert waited for its
        # commit), or the user does not exist (then there is nothing to read).
        found = session.scalar(select(BillingAccount.id).where(BillingAccount.user_id == user_id))
        if found is None:
            raise
        return found
    return account.id


def balance(session: Session, account_id: int) -> int:
    """The account's balance: the sum of its entries (0 without any)."""
    total = session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.account_id == account_id
        )
    )
    return int(total or 0)  # PostgreSQL's SUM of a bigint is a numeric (Decimal)


def post(
    session: Session,
    account_id: int,
    amount: int,
    kind: str,
    key: str,
    *,
    order_id: str | None = None,
    job_id: str | None = None,
    payment_id: str | None = None,
    actor: str | None = None,
    note: str | None = None,
) -> LedgerEntry | None:
    """Insert an entry of ``kind`` (not ``spend``: see :func:`spend`), unless the account
    has one with ``key`` already: then None, and nothing changes.

    ``grant``, ``purchase`` and ``refund`` take a positive amount; ``adjust`` a non-zero
    one, and a negative adjustment is taken like a spend (under the account's lock, and
    only if the balance covers it: else :class:`InsufficientCredit`)."""
    if kind == "spend":
        raise ValueError("a spend is posted with ledger.spend(), which checks the balance")
    if kind not in KINDS:
        raise ValueError(f"unknown ledger entry kind {kind!r} (one of {', '.join(KINDS)})")
    _check_amount(amount, kind, allow_negative=kind == "adjust")
    entry = _entry(account_id, amount, kind, key, order_id, job_id, payment_id, actor, note)
    if amount < 0:
        return _take(session, entry)
    if _has_key(session, account_id, key):
        return None
    return _insert(session, entry)


def spend(
    session: Session,
    account_id: int,
    amount: int,
    key: str,
    *,
    order_id: str | None = None,
    job_id: str | None = None,
    payment_id: str | None = None,
    actor: str | None = None,
    note: str | None = None,
) -> LedgerEntry | None:
    """Spend ``amount`` (positive) of the account's credits: a ``spend`` entry of
    ``-amount``, inserted only if the balance covers it, else
    :class:`InsufficientCredit` (nothing inserted).  The same ``key`` again: None, and
    nothing changes (even if the balance no longer covers it)."""
    _check_amount(amount, "spend", allow_negative=False)
    entry = _entry(account_id, -amount, "spend", key, order_id, job_id, payment_id, actor, note)
    return _take(session, entry)


def entries(
    session: Session, account_id: int, limit: int = 50, before_id: int | None = None
) -> list[LedgerEntry]:
    """The account's entries newest first, ``limit`` of them, older than ``before_id``
    (the last id of the page before) when given."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= ENTRIES_MAX:
        raise ValueError(f"limit must be an integer from 1 to {ENTRIES_MAX}, not {limit!r}")
    q = select(LedgerEntry).where(LedgerEntry.account_id == account_id)
    if before_id is not None:
        q = q.where(LedgerEntry.id < before_id)
    return list(session.scalars(q.order_by(LedgerEntry.id.desc()).limit(limit)))


# ---------------------------------------------------------------------- inside


def _check_amount(amount: int, kind: str, *, allow_negative: bool) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValueError(
            f"a ledger amount is an integer number of minor units, not {amount!r} "
            f"({type(amount).__name__})"
        )
    if amount == 0 or (amount < 0 and not allow_negative):
        wanted = "a non-zero" if allow_negative else "a positive"
        raise ValueError(f"a {kind} takes {wanted} amount (minor units), not {amount}")


def _entry(
    account_id: int,
    amount: int,
    kind: str,
    key: str,
    order_id: str | None,
    job_id: str | None,
    payment_id: str | None,
    actor: str | None,
    note: str | None,
) -> LedgerEntry:
    if not isinstance(key, str) or not key.strip() or len(key) > KEY_MAX:
        raise ValueError(
            f"a ledger key is a non-empty string of at most {KEY_MAX} characters, not {key!r}"
        )
    if note is not None and len(note) > NOTE_MAX:
        raise ValueError(f"a ledger note is at most {NOTE_MAX} characters, not {len(note)}")
    return LedgerEntry(
        account_id=account_id,
        amount=amount,
        kind=kind,
        key=key,
        order_id=order_id,
        job_id=job_id,
        payment_id=payment_id,
        actor=actor,
        note=note,
    )


def _lock_account(session: Session, account_id: int) -> None:
    """Take the account's lock row until the transaction ends: ``SELECT ... FOR
    UPDATE`` on PostgreSQL (another spend of this account waits here); on SQLite the
    clause is not rendered: the transaction is a writer's, serialized already."""
    found = session.scalar(
        select(BillingAccount.id).where(BillingAccount.id == account_id).with_for_update()
    )
    if found is None:
        raise LookupError(f"no billing account {account_id}")


def _take(session: Session, entry: LedgerEntry) -> LedgerEntry | None:
    """Insert a negative entry under the account's lock if the balance covers it."""
    _lock_account(session, entry.account_id)
    if _has_key(session, entry.account_id, entry.key):
        return None
    have = balance(session, entry.account_id)
    if have < -entry.amount:
        raise InsufficientCredit(entry.account_id, have, -entry.amount)
    return _insert(session, entry)


def _has_key(session: Session, account_id: int, key: str) -> bool:
    found = session.scalar(
        select(LedgerEntry.id).where(LedgerEntry.account_id == account_id, LedgerEntry.key == key)
    )
    return found is not None


def _insert(session: Session, entry: LedgerEntry) -> LedgerEntry | None:
    """Insert, or None when the key was inserted meanwhile by another transaction (the
    unique key decides; our insert is undone to a savepoint, the transaction goes on)."""
    try:
        with session.begin_nested():
            session.add(entry)
    except IntegrityError:
        if _has_key(session, entry.account_id, entry.key):
            return None
        raise
    return entry
