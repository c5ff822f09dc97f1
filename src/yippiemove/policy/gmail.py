"""Gmail's labels: what the mover copies out of Gmail and how it stores into Gmail.

On Gmail (capability X-GM-EXT-1) a folder is a *label*: one message with the labels
Inbox, Work and Travel shows up in INBOX, Work and Travel, with one X-GM-MSGID, and
``[Gmail]/All Mail`` shows every message that is not in Spam or Trash.  Copying such an
account folder by folder would copy a message once per label *plus* once for All Mail
(and for Important and Starred), and copying into Gmail folder by folder would store a
message once per source folder.  This module holds the decisions; ``transfer/gmail.py``
carries them out.  See docs/gmail.md, "What the mover does with Gmail".

Gmail as the source
-------------------
* The *views* are not copied as folders: ``\\All`` ("All Mail": every message of every
  label), ``\\Important`` (a label Gmail sets by itself) and ``\\Flagged`` ("Starred":
  exactly the messages with the ``\\Flagged`` flag, which every copy keeps).  The plan
  lists them as skipped, each with its reason.  Found by SPECIAL-USE attribute, or by
  name directly under ``[Gmail]``/``[Google Mail]`` (policy/special.py's tables; for
  Important the English name only).
* Every other folder (INBOX, Sent, Drafts, Spam, Trash, the user's labels) is copied as
  a folder, so a message arrives once per label: on a folder server that is one copy per
  folder it was in.
* **Archived** messages -- in All Mail with no label that is a folder on the source --
  are copied from All Mail into an *Archive* folder.  A label "is a folder" when the
  source lists a folder for it: ``\\Inbox`` (INBOX), ``\\Sent``, ``\\Draft`` (the
  ``\\Sent``/``\\Drafts`` folders) and every user label LIST shows.  So a message whose
  labels are only ``\\Important`` and/or ``\\Starred`` is archived (those are views), and
  so is a message whose only labels are hidden from IMAP in Gmail's settings (its label
  has no folder: without this rule it would not be copied at all).
* ``--folder``/``--exclude`` choose folders as usual; the archive is chosen or left out by
  the name ``Archive`` (``--exclude Archive``; ``--folder INBOX`` alone leaves it out).
  A message whose labels are all excluded folders is **not** archived: it is in a
  folder, which the user chose not to copy (archiving it would defeat ``--exclude``:
  "everything but Newsletters" must not bring the newsletters along in Archive).
  Which messages are archived therefore does not depend on the options, so re-runs
  with other options agree about it.
* The Archive folder is placed like a source folder named "Archive" with the SPECIAL-USE
  attribute ``\\Archive``: it goes to the destination's ``\\Archive`` folder when it has
  one (policy/special.py), else to a new folder "Archive"; folder rules apply
  (``--rename Archive=Old``...).  When the source also has a user label "Archive", the
  archived messages go wherever that label goes (merged with it).  When the destination
  is Gmail too and the archive went to the default new "Archive", it goes to the
  destination's ``\\All`` folder instead: a message appended there has no label, i.e. it
  is archived again.

Gmail as the destination
------------------------
* A message that several source folders hold (same bytes -- the SHA-256 the engine
  computes -- and the same INTERNALDATE instant) is appended **once**; each further
  folder adds its label (``UID COPY`` into the label's folder: on Gmail a COPY adds a
  label and answers COPYUID with the message's UID in that folder).
* Except for the destination's Trash and Spam (``\\Trash``, ``\\Junk``): on Gmail a
  message with the Trash or Spam label disappears from every other folder, so a message
  that is both in a source folder and in the source's Trash becomes two Gmail messages,
  one in Trash.  Messages going to those folders are always appended.
* Flags belong to the message on Gmail, not to a folder: only the folder that appended
  the message sets them (now and on re-runs, per the state file); folders that added
  their label, and messages found on Gmail already, keep the flags they have (the verify
  does not set flags back and forth between folders that disagree).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .folders import INBOX, Namespace, split_name
from .special import GMAIL_CONTAINERS, Box, normalize, role_by_attribute, role_by_name

__all__ = [
    "ARCHIVE_BOX",
    "ARCHIVE_NAME",
    "all_mail_folder",
    "archive_reason",
    "folder_labels",
    "is_archived",
    "label_key",
    "shares_labels",
    "views",
]

#: The archive pseudo-folder as the folder rules see it.
ARCHIVE_NAME = "Archive"
ARCHIVE_BOX = Box(ARCHIVE_NAME, frozenset({"\\ARCHIVE"}))

_VIEW_REASONS = {
    "all": (
        "Gmail's \\All folder: every message of every label; each message is copied with "
        "the folders of its labels, and archived messages (no label that is a folder) go "
        "to the archive folder"
    ),
    "important": (
        "Gmail's \\Important folder: a label Gmail sets by itself; its messages are copied "
        "with the folders of their other labels (or to the archive folder)"
    ),
    "flagged": (
        "Gmail's \\Flagged folder (Starred): starred messages are the ones with the "
        "\\Flagged flag, which every copy keeps"
    ),
}
_GMAIL = frozenset(normalize(c) for c in GMAIL_CONTAINERS)


def _view_role(box: Box, ns: Namespace) -> str | None:
    if "\\IMPORTANT" in box.attributes:
        return "important"
    role = role_by_attribute(box.attributes)
    if role in ("all", "flagged"):
        return role
    if role is not None:
        return None
    role = role_by_name(box.name, ns)
    if role in ("all", "flagged"):
        return role
    if role is None:
        try:
            parts = split_name(box.name, ns)
        except ValueError:
            return None
        if len(parts) == 2 and normalize(parts[0]) in _GMAIL and normalize(parts[1]) == "important":
            return "important"
    return None


def views(boxes: Sequence[Box], ns: Namespace) -> dict[str, str]:
    """Source folders of a Gmail account that are views, not copied: name -> why."""
    out: dict[str, str] = {}
    for box in boxes:
        role = _view_role(box, ns)
        if role is not None:
            out[box.name] = _VIEW_REASONS[role]
    return out


def all_mail_folder(boxes: Sequence[Box], ns: Namespace) -> str | None:
    """The ``\\All`` folder ("[Gmail]/All Mail"); by attribute first, then by name."""
    for box in boxes:
        if "\\ALL" in box.attributes and not {"\\NOSELECT", "\\NONEXISTENT"} & box.attributes:
            return box.name
    for box in boxes:
        if _view_role(box, ns) == "all" and not {"\\NOSELECT", "\\NONEXISTENT"} & box.attributes:
            return box.name
    return None


def label_key(label: str) -> str:
    """How labels compare: system labels (``\\Inbox``) in any case, user labels exactly."""
    if label.startswith("\\"):
        key = label.casefold()
        return "\\draft" if key == "\\drafts" else key
    return label


#: X-GM-LABELS spelling of the system folders' labels, by role (policy/special.py roles).
_SYSTEM_LABEL = {"sent": "\\sent", "drafts": "\\draft", "junk": "\\spam", "trash": "\\trash"}


def folder_labels(boxes: Sequence[Box], ns: Namespace) -> frozenset[str]:
    """The labels (as :func:`label_key`) that are folders on the source: a message with
    one of them is copied with that folder and is not archived."""
    out: set[str] = set()
    for box in boxes:
        if {"\\NOSELECT", "\\NONEXISTENT"} & box.attributes or _view_role(box, ns):
            continue
        if box.name.upper() == INBOX:
            out.add("\\inbox")
            continue
        role = role_by_attribute(box.attributes) or role_by_name(box.name, ns)
        if role in _SYSTEM_LABEL:
            out.add(_SYSTEM_LABEL[role])
            try:
                parts = split_name(box.name, ns)
            except ValueError:
                parts = (box.name,)
            if len(parts) == 2 and normalize(parts[0]) in _GMAIL:
                continue  # "[Gmail]/Sent Mail" is only the \Sent label
        try:
            parts = split_name(box.name, ns)
        except ValueError:
            parts = (box.name,)
        if len(parts) >= 2 and normalize(parts[0]) in _GMAIL:
            continue  # another system folder (a future one): not a user label
        out.add(box.name)
    return frozenset(out)


def is_archived(labels: Iterable[str], folders: frozenset[str]) -> bool:
    """Whether a message with these X-GM-LABELS (read in All Mail) is archived: none of
    its labels is a folder of the source (see the module docstring)."""
    return not any(label_key(lb) in folders for lb in labels)


def archive_reason(all_mail: str) -> str:
    return (
        f"archived messages: those in {all_mail!r} without a label that is a folder on the "
        "source (labels only \\Important or \\Starred count as none)"
    )


def shares_labels(attributes: Iterable[str], role: str | None) -> bool:
    """Whether messages going to a destination folder of Gmail may share one Gmail message
    with other folders (a label added), or must be appended: Trash and Spam hide a
    message from every other folder, so they never share."""
    attrs = {a.upper() for a in attributes}
    if {"\\TRASH", "\\JUNK"} & attrs:
        return False
    return role not in ("trash", "junk")
