"""The folder step's "More options" (issue 17, parity): date filters, a size limit,
renames and "put under a folder", as the REST API's ``folders`` object and
``yippiemove move`` have them (policy/rules.py).

The form's fields are checked here, each error worded for the customer and tied to its
field; nothing of the command line's spelling (``--since``) or the API's
(``folders.since``) reaches the page: :func:`plain` rewords whatever the service still
refuses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from yippiemove.policy.rules import FolderRules, MessageFilter, RuleError

__all__ = ["FIELDS", "OptionsForm", "describe_options", "plain", "reason_words"]

MB = 1024 * 1024
#: The form's fields (``opt_*``), and what the customer reads for each.
FIELDS = {
    "since": "Only mail received on or after",
    "before": "Only mail received before",
    "smaller_mb": "Only messages smaller than (MB)",
    "rename": "Rename folders",
    "under": "Put everything in a folder",
    "under_inbox": "The inbox too",
}
#: The rules' and filters' names as messages spell them -> the customer's words.
_WORDS = (
    ("--rename-regex", "the rename"),
    ("--rename", "the rename"),
    ("--under-inbox", "“the inbox too”"),
    ("--under", "the folder to put everything in"),
    ("--since", "“on or after”"),
    ("--before", "“before”"),
    ("--larger", "“larger than”"),
    ("--smaller", "“smaller than”"),
    ("--folder", "the folder"),
)
_KEY = re.compile(r"\Afolders\.(?:[a-z_]+: )?")


def plain(message: str) -> str:
    """A rule's or filter's message without the API's field path or the command line's
    option names: ``folders.--since 2024-01-01 is not before --before 2023-01-01: no
    message would match`` -> ``“on or after” 2024-01-01 is not before “before"...``."""
    if not message.startswith("folders."):
        return message  # not about the options: as the service says it
    return _reword(_KEY.sub("", message))


#: The planner's reasons name the rules as the command line does -> the page's words.
_REASONS = (
    ("--rename-regex ", "your rename "),
    ("--rename ", "your rename "),
    ("--under-inbox", "the inbox too"),
    ("--under ", "put in "),
    ("--no-special", "special folders too"),
)


def reason_words(reason: str) -> str:
    """A folder's reason (policy/rules.py: ``--rename Work=Projects``) as the folder step
    shows it (``your rename Work=Projects``)."""
    for option, words in _REASONS:
        reason = reason.replace(option, words)
    return reason


def _reword(text: str) -> str:
    for option, words in _WORDS:
        text = text.replace(option, words)
    return text[:1].upper() + text[1:]


def _text(form: Any, name: str, limit: int = 1000) -> str:
    value = form.get(f"opt_{name}")
    return value.strip()[:limit] if isinstance(value, str) else ""


@dataclass
class OptionsForm:
    """What the customer typed (strings, as in the form)."""

    since: str = ""
    before: str = ""
    smaller_mb: str = ""
    rename: str = ""
    under: str = ""
    under_inbox: bool = False
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_form(cls, form: Any) -> OptionsForm:
        return cls(
            since=_text(form, "since", 20),
            before=_text(form, "before", 20),
            smaller_mb=_text(form, "smaller_mb", 20),
            rename=_text(form, "rename", 20_000),
            under=_text(form, "under"),
            under_inbox=form.get("opt_under_inbox") == "1",
        )

    @property
    def used(self) -> bool:
        return any((self.since, self.before, self.smaller_mb, self.rename, self.under))

    def renames(self) -> list[str]:
        """``Old = New`` lines as the rules take them (``Old=New``)."""
        out = []
        for line in self.rename.splitlines():
            if line.strip():
                old, sep, new = line.partition("=")
                out.append(f"{old.strip()}{sep}{new.strip()}" if sep else line.strip())
        return out

    def _date(self, name: str) -> date | None:
        value = getattr(self, name)
        if not value:
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            self.errors[name] = "Enter a date like 2024-01-31."
            return None

    def to_folders(self) -> dict[str, Any]:
        """The ``folders`` keys of these options (``errors`` says what is wrong)."""
        self.errors = {}
        out: dict[str, Any] = {}
        since, before = self._date("since"), self._date("before")
        if since is not None and before is not None and since >= before:
            self.errors["before"] = (
                "This date must be later than the “on or after” date: no message would "
                "be copied otherwise."
            )
        if since is not None:
            out["since"] = since.isoformat()
        if before is not None:
            out["before"] = before.isoformat()
        if self.smaller_mb:
            try:
                mb = float(self.smaller_mb.replace(",", "."))
            except ValueError:
                mb = -1.0
            if not 0 < mb <= 1_000_000:
                self.errors["smaller_mb"] = "Enter a size in MB, like 25 (or leave it empty)."
            else:
                out["smaller"] = max(1, round(mb * MB))
        renames = self.renames()
        bad = [n for n, line in enumerate(renames, 1) if "=" not in line.lstrip("=")]
        if bad:
            self.errors["rename"] = (
                f"Line {bad[0]}: write each rename as Old name = New name, one per line."
            )
        elif renames:
            out["rename"] = renames
        if self.under:
            out["under"] = self.under
            if self.under_inbox:
                out["under_inbox"] = True
        elif self.under_inbox:
            self.errors["under"] = "Enter the folder to put everything in (the inbox too)."
        if not self.errors:
            self._check_rules(out)
        return out if not self.errors else {}

    def _check_rules(self, out: dict[str, Any]) -> None:
        """The rules' own checks (an empty name, two renames of one folder...), each
        tied to its field and reworded."""
        try:
            FolderRules.parse(renames=out.get("rename", ()))
        except RuleError as exc:
            self.errors["rename"] = _reword(str(exc)) + "."
        try:
            FolderRules.parse(under=out.get("under"), under_inbox=bool(out.get("under_inbox")))
        except RuleError as exc:
            self.errors["under"] = _reword(str(exc)) + "."
        try:
            MessageFilter.parse(smaller=out.get("smaller"))
        except RuleError as exc:  # pragma: no cover - the size was checked above
            self.errors["smaller_mb"] = _reword(str(exc)) + "."


def describe_options(folders: dict[str, Any] | None) -> list[str]:
    """The rules and filters of an order, in words (the job page)."""
    if not folders:
        return []
    out = []
    if folders.get("since"):
        out.append(f"only mail received on or after {folders['since']}")
    if folders.get("before"):
        out.append(f"only mail received before {folders['before']}")
    for key, words in (("larger", "larger"), ("smaller", "smaller")):
        value = folders.get(key)
        if value is not None:
            size = f"{value:,} bytes" if isinstance(value, int) else str(value)
            out.append(f"only messages {words} than {size}")
    for rule in (folders.get("rename") or []) + (folders.get("rename_regex") or []):
        old, _sep, new = str(rule).partition("=")
        out.append(f"{old} renamed to {new}")
    if folders.get("under"):
        inbox = " (the inbox too)" if folders.get("under_inbox") else ""
        out.append(f"everything put in {folders['under']}{inbox}")
    return out
