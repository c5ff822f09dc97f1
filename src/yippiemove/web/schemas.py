"""The REST API's request and response bodies, and readable validation messages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from yippiemove.jobs.vocab import TERMINAL as _TERMINAL
from yippiemove.jobs.vocab import JobStatus, Security

#: The API's spelling of the vocabularies (OpenAPI shows them as enums of strings), checked
#: against the one definition in jobs/vocab.py here, at import.
StatusName = Literal["queued", "running", "done", "failed", "cancelled"]
SecurityName = Literal["tls", "starttls", "none"]
if list(get_args(StatusName)) != list(JobStatus) or list(get_args(SecurityName)) != list(
    Security
):  # pragma: no cover - a vocabulary changed in one place only
    raise ImportError("web/schemas.py: StatusName/SecurityName differ from jobs/vocab.py")

STATUSES = tuple(JobStatus)
TERMINAL = frozenset(_TERMINAL)


class AccountIn(BaseModel):
    """An IMAP account.  The password is write-only: no response ever contains it."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, max_length=253, examples=["imap.example.org"])
    port: int = Field(ge=1, le=65535, examples=[993])
    security: SecurityName = Field(
        description="`tls`: TLS from the first byte (IMAPS); `starttls`: upgraded with "
        "STARTTLS; `none`: plain text, only for loopback hosts unless the operator allows it."
    )
    username: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024, json_schema_extra={"writeOnly": True})

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        v = v.strip()
        if not v or any(c.isspace() or c in "/@?#" for c in v):
            raise ValueError("must be a host name or IP address, like imap.example.org")
        return v


class FoldersIn(BaseModel):
    """Which source folders to copy (default: all).

    A name matches that folder and its subfolders (INBOX in any case); a shell glob
    (`Archive/20*`) matches by pattern.  `exclude` is applied after `include`.
    """

    model_config = ConfigDict(extra="forbid")

    include: list[str] = Field(default_factory=list, max_length=5000)
    exclude: list[str] = Field(default_factory=list, max_length=5000)
    # Folder rules and message filters, as `yippiemove move` has them (docs/folders.md).
    rename: list[str] = Field(default_factory=list, max_length=1000)
    rename_regex: list[str] = Field(default_factory=list, max_length=1000)
    under: str | None = Field(None, max_length=1000)
    under_inbox: bool = False
    special: bool = True
    since: str | None = Field(None, max_length=10, examples=["2020-01-31"])
    before: str | None = Field(None, max_length=10, examples=["2024-01-01"])
    larger: int | None = Field(None, ge=0)
    smaller: int | None = Field(None, ge=0)

    @field_validator("include", "exclude")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not name or len(name) > 1000:
                raise ValueError("folder names must be 1-1000 characters")
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


class TransferIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: AccountIn
    dest: AccountIn
    folders: FoldersIn | None = None


class AccountOut(BaseModel):
    host: str
    port: int
    security: str
    username: str


class TransferCreated(BaseModel):
    id: str
    status: str


class TransferOut(BaseModel):
    id: str
    status: str = Field(description="queued | running | done | failed | cancelled")
    source: AccountOut
    dest: AccountOut
    folders: dict[str, list[str]] | None = None
    created: float
    started: float | None = None
    finished: float | None = None
    progress: dict[str, Any] = Field(
        description="folders_done/total, messages_done/total, bytes_done/total, rate "
        "(bytes/s), eta (s), failed, current, rate_history [[t, bytes_done], ...], "
        "per_folder {name: {...}}, throttled_until (unix time while the server throttles "
        "the transfer, else null), reconnects"
    )
    error: str | None = None
    attempts: int | None = Field(None, description="job processes started in this run")
    runs: int | None = Field(None, description="1 + re-runs")
    can_rerun: bool | None = Field(None, description="ended, and the passwords are still stored")
    credentials_expire: float | None = Field(
        None, description="when the stored passwords will be deleted (unix time)"
    )


class TransferList(BaseModel):
    transfers: list[TransferOut]


class ErrorOut(BaseModel):
    error: str = Field(description="what is wrong, safe to show to a person")


class AlreadyActiveOut(BaseModel):
    error: str = Field(description="what is wrong, safe to show to a person")
    id: str = Field(description="the transfer of the same pair that is queued or running")


# -- readable validation errors ------------------------------------------------------------

_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "unknown field",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "list_type": "must be a list",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "string_too_short": "must not be empty",
    "json_invalid": "is not valid JSON",
}


def _field(loc: Iterable[Any]) -> str:
    parts = [str(p) for p in loc]
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
