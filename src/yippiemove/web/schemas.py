"""The REST API's request and response bodies, and readable validation messages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    field_validator,
    model_serializer,
)
from pydantic_core import PydanticCustomError

from yippiemove.jobs.vocab import TERMINAL as _TERMINAL
from yippiemove.jobs.vocab import JobStatus, Security

#: The API's spelling of the vocabularies (OpenAPI shows them as enums of strings), checked
#: against the one definition in jobs/vocab.py here, at import.
StatusName = Literal["queued", "running", "done", "failed", "cancelled", "awaiting_payment"]
SecurityName = Literal["tls", "starttls", "none"]
if list(get_args(StatusName)) != list(JobStatus) or list(get_args(SecurityName)) != list(
    Security
):  # pragma: no cover - a vocabulary changed in one place only
    raise ImportError("web/schemas.py: StatusName/SecurityName differ from jobs/vocab.py")

STATUSES = tuple(JobStatus)
TERMINAL = frozenset(_TERMINAL)


#: A host name (letters, digits, hyphens; dot-separated labels) or an IP address (IPv6
#: optionally in brackets): what the service accepts, so that a body that matches the
#: schema is never a 422 (the service may still refuse an address by policy: 400).
_HOST = (
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
    r"|\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\]|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)$"
)


def _whole_int(value: Any) -> Any:
    """JSON Schema's ``integer``: a number with no fraction (``993``, ``993.0``); never a
    boolean or a string, which pydantic's lax mode would turn into one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("int_type", "must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise PydanticCustomError("int_from_float", "must be an integer")
        return int(value)
    return value


#: An integer as JSON Schema has it (see :func:`_whole_int`).
WholeInt = Annotated[int, BeforeValidator(_whole_int)]
#: A folder name or pattern.
FolderName = Annotated[str, Field(min_length=1, max_length=1000)]


class AccountIn(BaseModel):
    """An IMAP account.  The password is write-only: no response ever contains it."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, max_length=253, pattern=_HOST, examples=["imap.example.org"])
    # Strict: ``true`` and ``"993"`` are not ports (pydantic's lax mode takes both).
    port: WholeInt = Field(ge=1, le=65535, examples=[993])
    security: SecurityName = Field(
        description="`tls`: TLS from the first byte (IMAPS); `starttls`: upgraded with "
        "STARTTLS; `none`: plain text, only for loopback hosts unless the operator allows it."
    )
    username: str = Field(min_length=1, max_length=320, pattern=r"^[^\x00-\x1f\x7f]+$")
    password: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[^\x00\r\n]+$",
        json_schema_extra={"writeOnly": True},
    )


#: A calendar date as the message filters take it (JSON Schema's ``format: date``).
_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


class FoldersIn(BaseModel):
    """Which source folders to copy (default: all).

    A name matches that folder and its subfolders (INBOX in any case); a shell glob
    (`Archive/20*`) matches by pattern.  `exclude` is applied after `include`.
    """

    model_config = ConfigDict(extra="forbid")

    include: list[FolderName] = Field(default_factory=list, max_length=5000)
    exclude: list[FolderName] = Field(default_factory=list, max_length=5000)
    # Folder rules and message filters, as `yippiemove move` has them (docs/folders.md).
    # Strict types: a boolean is ``true``/``false``, a size an integer, a date YYYY-MM-DD.
    rename: list[str] = Field(default_factory=list, max_length=1000, examples=[["Sent Items=Sent"]])
    rename_regex: list[str] = Field(default_factory=list, max_length=1000)
    under: str | None = Field(None, min_length=1, max_length=1000, examples=["Imported"])
    under_inbox: bool = Field(False, strict=True, description="needs `under`")
    special: bool = Field(True, strict=True)
    since: str | None = Field(
        None, pattern=_DATE, json_schema_extra={"format": "date"}, examples=["2020-01-31"]
    )
    before: str | None = Field(
        None, pattern=_DATE, json_schema_extra={"format": "date"}, examples=["2024-01-01"]
    )
    # The bound inside the Optional: on the outer field pydantic wrote it to the OpenAPI
    # document as "ge" (no JSON Schema keyword), and schemathesis sent negative sizes.
    larger: Annotated[int, Field(ge=0), BeforeValidator(_whole_int)] | None = Field(
        None, description="bytes"
    )
    smaller: Annotated[int, Field(ge=0), BeforeValidator(_whole_int)] | None = Field(
        None, description="bytes"
    )

    @field_validator("since", "before")
    @classmethod
    def _date(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                date.fromisoformat(v)
            except ValueError:
                raise ValueError("must be a date as YYYY-MM-DD") from None
        return v

    @model_serializer(mode="wrap")
    def _without_default_rules(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """include and exclude always; a rule or filter only when it is set."""
        data: dict[str, Any] = handler(self)
        for key in ("rename", "rename_regex", "under", "under_inbox", "special"):
            if data.get(key) == type(self).model_fields[key].get_default(call_default_factory=True):
                data.pop(key, None)
        for key in ("since", "before", "larger", "smaller"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class SignedInAccountIn(BaseModel):
    """An account signed in with OAuth2 (issue 16): the id of a finished authorization
    (`POST /api/v1/oauth/{provider}/authorizations`) instead of the server and password."""

    model_config = ConfigDict(extra="forbid")

    authorization: str = Field(
        min_length=32, max_length=32, pattern=r"^[0-9a-f]{32}$", examples=["0" * 32]
    )


def _account_kind(value: Any) -> str:
    """Which account shape a body gives: an ``authorization`` is a signed-in account."""
    if isinstance(value, Mapping) and "authorization" in value:
        return "SignedInAccountIn"
    if isinstance(value, SignedInAccountIn):
        return "SignedInAccountIn"
    return "AccountIn"


#: An order's account: the server and password, or a finished OAuth2 sign-in.  The
#: discriminator keeps validation messages to the shape given (no "one of" noise).
AnyAccountIn = Annotated[
    Annotated[AccountIn, Tag("AccountIn")] | Annotated[SignedInAccountIn, Tag("SignedInAccountIn")],
    Discriminator(_account_kind),
]
_TAGS = ("AccountIn", "SignedInAccountIn")


# -- issue 17: staged moves until cut-over (service/staged.py) -----------------------------


class ScheduleIn(BaseModel):
    """A staged move: a first pass (now, or at `start_at`), top-up passes every
    `interval` seconds while the old mailbox still receives mail, and a final pass at
    `final_at` or when you say so (`POST /api/v1/transfers/{id}/final-pass`)."""

    model_config = ConfigDict(extra="forbid")

    interval: float = Field(
        gt=0,
        le=30 * 86400,
        allow_inf_nan=False,
        description="seconds between top-up passes (the service's minimum, 1 hour by "
        "default, or 400)",
        examples=[21600],
    )
    start_at: float | None = Field(
        None, allow_inf_nan=False, description="when the first pass starts (unix time); null: now"
    )
    final_at: float | None = Field(
        None,
        allow_inf_nan=False,
        description="when the final pass runs (unix time); null: when you call final-pass",
    )


class PassOut(BaseModel):
    """One ended pass of a staged move, with its figures."""

    number: int
    kind: Literal["first", "top-up", "final", "re-run"]
    started: float | None = None
    finished: float
    outcome: str = Field(description="done | failed | cancelled")
    copied: int
    already_present: int
    failed: int
    bytes: int = Field(description="bytes copied in this pass")


class ScheduleOut(BaseModel):
    """A staged move's schedule, next pass, how long the passwords are kept, history."""

    state: Literal["scheduled", "syncing", "final", "done", "cancelled"] = Field(
        description="`scheduled`: waiting for `start_at`; `syncing`: first pass or "
        "top-ups; `final`: the final pass is queued or running; `done`: the final pass "
        "ended; `cancelled`: no more passes"
    )
    interval: float
    start_at: float
    final_at: float | None = None
    final_requested: bool
    next_run_at: float | None = Field(
        None,
        description="when the next pass starts (unix time); null: none to come, or "
        "a pass is queued or running",
    )
    next_kind: Literal["first", "top-up", "final"] | None = None
    current_kind: Literal["first", "top-up", "final", "re-run"] = Field(
        description="the pass queued, running or last run"
    )
    credentials_kept: bool = Field(
        description="the passwords are kept for the passes to come; deleted when the "
        "final pass ends or the schedule is cancelled"
    )
    credentials_until: float | None = Field(
        None,
        description="the final pass's time while the passwords are kept for it (they are "
        "deleted when it ends); null with `credentials_kept`: until the final pass you "
        "start ends",
    )
    passes: list[PassOut]


class TransferIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: AnyAccountIn
    dest: AnyAccountIn
    folders: FoldersIn | None = None
    schedule: ScheduleIn | None = Field(
        None, description="a staged move until cut-over (issue 17); null: one pass"
    )
    quote_id: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{32}$",
        description="the `id` of a quote of this source and folder choice "
        "(`POST /api/v1/quotes`): required when the service charges for transfers (else "
        "402), ignored when it does not; the order keeps the quote's price",
        examples=["0" * 32],
    )


class AuthorizationIn(BaseModel):
    """Start an OAuth2 sign-in.  With `transfer` and `side`: a new sign-in for a
    transfer the provider stopped (`error_code` `reauth`), which then resumes."""

    model_config = ConfigDict(extra="forbid")

    login_hint: str | None = Field(None, max_length=320, pattern=r"^[^\x00-\x1f\x7f]+$")
    transfer: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9]+$")
    side: Literal["source", "dest"] | None = None


class AuthorizationStarted(BaseModel):
    id: str = Field(description="the authorization's id: an order's `authorization`")
    authorization_url: str = Field(description="send the user's browser here")
    expires: float = Field(description="the user must finish before this (unix time)")


class AuthorizationOut(BaseModel):
    id: str
    provider: str
    status: Literal["pending", "checking", "done", "failed"] = Field(
        description="`pending`: the user has not come back yet; `checking`: signed in, "
        "the mailbox is being checked; `done`: usable in an order; `failed`: see `error`"
    )
    expires: float = Field(description="when this authorization is deleted (unix time)")
    error: str | None = None
    account: AccountOut | None = Field(None, description="the signed-in account, once done")


class AccountOut(BaseModel):
    host: str
    port: int
    security: str
    username: str
    oauth_provider: str | None = Field(
        None,
        exclude_if=lambda v: v is None,
        description="the OAuth2 provider this account signs in with (no password)",
    )
    signed_out: bool | None = Field(
        None,
        exclude_if=lambda v: v is None,
        description="true: the customer asked to forget the sign-in; sign in again to run",
    )


class TransferCreated(BaseModel):
    id: str
    status: str = Field(
        description="`queued`, or `awaiting_payment`: the service charges and the "
        "balance did not cover the quote's price (pay it, then it is queued)"
    )


def _unset(value: Any) -> bool:
    return value is None


class FoldersOut(BaseModel):
    """The ``folders`` of an order as stored: include and exclude always, each rule or
    filter only when it was set (the same names and values as :class:`FoldersIn`)."""

    include: list[str]
    exclude: list[str]
    rename: list[str] | None = Field(None, exclude_if=_unset)
    rename_regex: list[str] | None = Field(None, exclude_if=_unset)
    under: str | None = Field(None, exclude_if=_unset)
    under_inbox: bool | None = Field(None, exclude_if=_unset)
    special: bool | None = Field(None, exclude_if=_unset)
    since: str | None = Field(None, exclude_if=_unset, examples=["2020-01-31"])
    before: str | None = Field(None, exclude_if=_unset, examples=["2024-01-01"])
    # A size may have been given as "10M" to the service (the command line's syntax).
    larger: int | str | None = Field(None, exclude_if=_unset)
    smaller: int | str | None = Field(None, exclude_if=_unset)


class FailureOut(BaseModel):
    """Why a transfer stopped, in plain words (issue 17)."""

    kind: str = Field(
        description="auth | consent_revoked | unreachable | tls | quota | too_large | "
        "rate_limited | folder_gone | messages_failed | internal | other"
    )
    side: Literal["source", "dest"] | None = Field(
        None, description="the account it concerns, when known"
    )
    message: str = Field(description="what happened, for a person")
    next_step: str = Field(description="what to do next, for a person")
    detail: str = Field(description="the raw text (a server's answer or ours), for support")


class ChargeOut(BaseModel):
    """What the current run of a transfer costs (issue 20; billing on only).  Money is
    an integer of minor units (cents) with its `currency`."""

    run: int = Field(description="the run it is the price of (1: the order, 2...: re-runs)")
    price: int = Field(description="minor units")
    currency: str = Field(examples=["usd"])
    state: Literal["awaiting_payment", "paid", "free", "refunded"] = Field(
        description="`awaiting_payment`: nothing spent, the transfer waits (pay by card: "
        "`POST /api/v1/transfers/{id}/payment`, or from credits: `POST "
        "/api/v1/transfers/{id}/settle`); `paid`: spent from the balance; `free`: nothing "
        "to pay; `refunded`: given back after a failure on the service's side"
    )
    reason: str | None = Field(
        None, description="why it still waits (a declined card, a dispute...), for a person"
    )
    balance: int = Field(description="the account's balance now (minor units)")
    waiting: bool = Field(description="the transfer is `awaiting_payment`")


class TransferOut(BaseModel):
    id: str
    status: str = Field(
        description="queued | running | done | failed | cancelled | awaiting_payment "
        "(the service charges and the order is not paid yet: see `charge`)"
    )
    source: AccountOut
    dest: AccountOut
    folders: FoldersOut | None = None
    created: float
    started: float | None = None
    finished: float | None = None
    progress: dict[str, Any] = Field(
        description="folders_done/total, messages_done/total (answered by the "
        "destination), bytes_done/total (including the bytes of messages on their way), "
        "rate (bytes/s over the last 15 s of this run; null until there is enough data), "
        "eta (s) and eta_range [low, high] (s) from that rate (null until then), failed, "
        "current, rate_history [[t, bytes moved in this run], ...], per_folder {name: "
        "{dest, messages, bytes, messages_done, bytes_done, failed, state}} with state one "
        "of waiting, copying, verifying, done, interrupted, failed; throttled_until (unix "
        "time while the server throttles the transfer, else null), reconnects"
    )
    error: str | None = None
    attempts: int | None = Field(None, description="job processes started in this run")
    runs: int | None = Field(None, description="1 + re-runs")
    can_rerun: bool | None = Field(None, description="ended, and the passwords are still stored")
    credentials_expire: float | None = Field(
        None, description="when the stored passwords will be deleted (unix time)"
    )
    error_code: str | None = Field(
        None,
        description="`reauth`: the provider refused the OAuth2 sign-in (consent revoked): "
        "sign in again (POST /api/v1/oauth/{provider}/authorizations with `transfer` and "
        "`side`) and the transfer resumes",
    )
    sign_in_needed: list[str] = Field(
        default_factory=list,
        description="the sides (`source`, `dest`) waiting for a new OAuth2 sign-in",
    )
    failure: FailureOut | None = Field(
        None,
        description="why it stopped (or, when done, why some messages were not copied) "
        "in plain words, with `detail` the raw text; null otherwise",
    )
    credential_sides: list[str] = Field(
        default_factory=list,
        description="the sides that take a new password now "
        "(`PUT /api/v1/transfers/{id}/credentials`): failed or cancelled, not OAuth2",
    )
    schedule: ScheduleOut | None = Field(
        None, description="a staged move's schedule and passes; null: not a staged move"
    )
    charge: ChargeOut | None = Field(
        None,
        description="what the current run costs and whether it is paid (issue 20); null "
        "when the service does not charge (or in lists)",
    )


class NewPasswordIn(BaseModel):
    """A side's new password (the same account: host and user name stay the order's)."""

    model_config = ConfigDict(extra="forbid")

    password: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[^\x00\r\n]+$",
        json_schema_extra={"writeOnly": True},
    )


class CredentialsIn(BaseModel):
    """New passwords for a failed or cancelled transfer (issue 17): one side or both.
    Each is checked on the spot (log in and list, as the order form does) before it is
    stored; then the transfer resumes unless `resume` is false."""

    model_config = ConfigDict(extra="forbid")

    source: NewPasswordIn | None = None
    dest: NewPasswordIn | None = None
    resume: bool = Field(
        True,
        description="run the transfer again at once (it continues where it stopped: "
        "what is already on the destination is not copied again)",
    )


class TransferList(BaseModel):
    """One page of your transfers, newest first."""

    transfers: list[TransferOut] = Field(
        description="with `view=summary` (the default) each `progress` leaves out "
        "`rate_history` and `per_folder` (`GET /api/v1/transfers/{id}` has them)"
    )
    next_cursor: str | None = Field(
        None,
        exclude_if=_unset,
        description="there are older transfers: pass it as `cursor` for the next page; "
        "absent on the last page (so a one-page list is `{\"transfers\": [...]}` as "
        "before pagination)",
    )


#: The error codes by HTTP status (``code`` of every API error; docs/api.md).
ERROR_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    402: "payment_required",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
}


def error_body(status: int, message: str, code: str | None = None, **extra: Any) -> dict[str, Any]:
    """The one shape of every API error: ``code`` (for programs), ``message`` (for
    people), ``error`` (the same message: what version 1 answered, kept for its
    clients) and, where they apply, ``errors`` (per field) and ``id``."""
    body: dict[str, Any] = {
        "code": code or ERROR_CODES.get(status, "error"),
        "message": message,
        "error": message,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


class FieldErrorOut(BaseModel):
    field: str = Field(description="where, e.g. `source.port` or `folders.since`")
    message: str = Field(description="what is wrong there")


class ErrorOut(BaseModel):
    """Every error the API answers has this shape (whatever the status)."""

    code: str = Field(
        description="what kind of error, for programs: "
        + ", ".join(sorted(set(ERROR_CODES.values())))
        + ", already_active, credentials_refused"
    )
    message: str = Field(description="what is wrong, safe to show to a person")
    error: str = Field(description="the same as `message` (version 1's field, kept)")
    errors: list[FieldErrorOut] | None = Field(
        default=None, description="invalid requests (422): what is wrong, per field"
    )
    id: str | None = Field(
        default=None, description="`already_active` (409): the transfer under way"
    )


class AlreadyActiveOut(ErrorOut):
    id: str = Field(description="the transfer of the same pair that is queued or running")


class CredentialsRefusedOut(ErrorOut):
    """A new password that did not pass the check (code ``credentials_refused``), or an
    invalid body (code ``invalid``, no ``kind``)."""

    kind: str | None = Field(None, description="why, as in `FailureOut.kind`")
    detail: str | None = Field(None, description="the check's raw text (the server's answer)")


# -- readable validation errors ------------------------------------------------------------

_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "unknown field",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "date_type": "must be a date as YYYY-MM-DD",
    "date_parsing": "must be a date as YYYY-MM-DD",
    "date_from_datetime_parsing": "must be a date as YYYY-MM-DD",
    "date_from_datetime_inexact": "must be a date as YYYY-MM-DD",
    "list_type": "must be a list",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "string_too_short": "must not be empty",
    "json_invalid": "is not valid JSON",
}


#: What a field's ``pattern`` means, in words.
_PATTERN_MESSAGES = {
    "host": "must be a host name or IP address, like imap.example.org",
    "username": "must not contain control characters",
    "password": "must not contain line breaks or NUL",
    "since": "must be a date as YYYY-MM-DD",
    "before": "must be a date as YYYY-MM-DD",
}


def _field(loc: Iterable[Any]) -> str:
    parts = [str(p) for p in loc if str(p) not in _TAGS]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts)


def _message(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    loc = list(err.get("loc", ()))
    field = _field(loc)
    if kind == "json_invalid":
        ctx = err.get("ctx") or {}
        detail = ctx.get("error", "")
        return (
            f"the request body is not valid JSON ({detail})"
            if detail
            else ("the request body is not valid JSON")
        )
    if not field and kind in ("missing", "model_attributes_type", "model_type", "dict_type"):
        return "the request body must be a JSON object"
    if field.endswith("port") and kind in ("greater_than_equal", "less_than_equal"):
        text = "must be 1-65535"
    elif kind == "string_pattern_mismatch" and loc[-1] in _PATTERN_MESSAGES:
        text = _PATTERN_MESSAGES[loc[-1]]
    elif kind in ("string_too_short", "string_too_long") and loc[-2:-1] in (
        ["include"],
        ["exclude"],
    ):
        field = _field(loc[:-1])  # the list, not the item's index
        text = "folder names must be 1-1000 characters"
    elif kind == "literal_error":
        expected = (err.get("ctx") or {}).get("expected", "")
        text = f"must be one of {expected}"
    elif kind in _MESSAGES:
        text = _MESSAGES[kind]
    else:
        text = str(err.get("msg", "is invalid"))
        text = text.removeprefix("Value error, ")
        text = text[:1].lower() + text[1:]
    return f"{field}: {text}" if field else text


def validation_message(errors: Iterable[Mapping[str, Any]]) -> tuple[str, list[dict[str, str]]]:
    """One sentence for people, plus ``[{"field", "message"}]`` for programs."""
    items = []
    for err in errors:
        items.append({"field": _field(err.get("loc", ())), "message": _message(err)})
    # Drop duplicates (a union type reports each branch), keep order.
    seen: set[str] = set()
    unique = [i for i in items if not (i["message"] in seen or seen.add(i["message"]))]
    return "; ".join(i["message"] for i in unique[:5]) or "invalid request", unique


# -- domain-wide moves (issue 16) ------------------------------------------------------------

DomainKind = Literal["service_account", "client_credentials"]
_NO_CONTROL = r"^[^\x00-\x1f\x7f]+$"


class DomainCredentialIn(BaseModel):
    """A customer's admin credential for domain-wide moves: a Google Workspace service
    account key with domain-wide delegation (`kind` `service_account`, `key`), or a
    Microsoft 365 application (`kind` `client_credentials`, `tenant`, `client_id`,
    `client_secret`).  The key and the secret are write-only: stored encrypted, never
    shown back."""

    model_config = ConfigDict(extra="forbid")

    kind: DomainKind
    domain: str = Field(
        min_length=1,
        max_length=253,
        examples=["example.org"],
        description="the mailboxes' domain: only its addresses are moved with it",
    )
    label: str | None = Field(None, max_length=200, description="your name for it")
    key: dict[str, Any] | None = Field(
        None, description="`service_account`: the key's JSON file, as an object"
    )
    tenant: str | None = Field(None, min_length=1, max_length=200, pattern=_NO_CONTROL)
    client_id: str | None = Field(None, min_length=1, max_length=200, pattern=_NO_CONTROL)
    client_secret: str | None = Field(None, min_length=1, max_length=1024)


class DomainCredentialOut(BaseModel):
    id: str
    kind: str
    provider: str = Field(description="`google` or `microsoft`")
    label: str
    principal: str = Field(description="the key's client_email, or the application's id")
    tenant: str | None
    domain: str
    created: float


class DomainCredentialList(BaseModel):
    credentials: list[DomainCredentialOut]


class DomainSideIn(BaseModel):
    """One side of a domain batch: a domain credential (its `id`; the provider's IMAP
    server unless `host` is given) or, for the destination, a server whose users log in
    with their passwords (`dest_username`/`dest_password` per user)."""

    model_config = ConfigDict(extra="forbid")

    credential: str | None = Field(None, min_length=1, max_length=32)
    host: str | None = Field(None, min_length=1, max_length=253, pattern=_HOST)
    port: WholeInt | None = Field(None, ge=1, le=65535)
    security: SecurityName | None = None


class DomainUserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str = Field(min_length=1, max_length=320, pattern=_NO_CONTROL)
    dest_address: str | None = Field(None, min_length=1, max_length=320, pattern=_NO_CONTROL)
    dest_username: str | None = Field(None, min_length=1, max_length=320, pattern=_NO_CONTROL)
    dest_password: str | None = Field(None, min_length=1, max_length=1024)


class DomainBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: DomainSideIn
    dest: DomainSideIn
    users: list[
        Annotated[str, Field(min_length=1, max_length=320, pattern=_NO_CONTROL)] | DomainUserIn
    ] = Field(min_length=1, max_length=10000, examples=[["ann@example.org", "bob@example.org"]])
    folders: FoldersIn | None = None
    check: bool = Field(
        True,
        description="sign in to every mailbox on both sides first (a token had, a login "
        "made) and start only those that pass",
    )
    wait: bool = Field(
        True,
        description="answer when every line is checked and started (200, the lists); "
        "`false`: answer at once with the batch (202, as `GET /api/v1/batches/{id}`), "
        "its lines checked in the background (issue 17)",
    )


class DomainBatchOut(BaseModel):
    created: list[str] = Field(description="the new transfers' ids, one per good line")
    errors: list[str] = Field(description="`line N: ADDRESS: why` of the lines refused")
    failed: list[str] = Field(
        description="lines whose transfer could not be created (already running...)"
    )
