"""Special folders: Sent, Drafts, Trash, Junk, Archive (and All, Flagged) on both sides.

A folder's *role* comes from its RFC 6154 SPECIAL-USE attribute (``\\Sent``...) when the
server gives one, else from its name: a table of well-known names in English and other
languages (German, French, Spanish, Italian, Dutch, Portuguese, Polish, Swedish,
Russian, Danish, Norwegian, Finnish, Czech, Turkish), Outlook/Exchange names ("Sent
Items", "Deleted Items", "Junk Email"), Apple Mail's ("Sent Messages", "Deleted
Messages"), Yahoo's "Bulk Mail" and Gmail's localised "[Gmail]/..." and
"[Google Mail]/..." names.  Names compare case-insensitively (Unicode case folding, NFC,
runs of white space as one space).

A name counts only where a client puts the special folder: as the last component of a
path, relative to the personal namespace, that is at the top level ("Sent"; also
"INBOX.Sent" on a Cyrus-style "INBOX." namespace, whose top level is INBOX's children),
directly under INBOX ("INBOX/Sent" on a "/" server), or directly under Gmail's
"[Gmail]" / "[Google Mail]".  "Projects/Sent" is an ordinary folder.

The server's word wins (docs/folders.md "The server's word on special folders"): when a
server marks any folder with a role's attribute (RFC 6154, or Gmail's XLIST spellings
``\\AllMail``, ``\\Spam``, ``\\Starred``), names are not used for *that role* on that
server: an ordinary "Drafts" beside the server's ``\\Drafts`` folder "Entwürfe" keeps its
own name (:func:`server_marks`, :func:`lookalike`).  The decision is per role, not per
server: a server that marks ``\\Sent`` and ``\\Trash`` but no ``\\Archive`` still has its
"Archive" found by name.

Roles and what the mover does with them (``MAPPED_ROLES``):

- sent, drafts, trash, junk, archive: a source folder with the role goes to the
  destination's folder with that role (see :func:`plan_special`).
- all, flagged: detected and reported, never mapped by role.  On Gmail and on servers
  with virtual folders they are *views* ("[Gmail]/All Mail" holds every message of
  every label; "Starred" every flagged message), so appending into the destination's
  \\All or \\Flagged folder would fail or double messages, and merging a source view
  into a real folder would too.  Such a folder is copied like any other folder under
  its own name (whether to copy it at all is the user's or a provider preset's call).

The destination's folder for a role: a folder with the SPECIAL-USE attribute beats one
found by name; among several, one whose name is also a well-known name for the role
wins, then the one with fewer path components, then the earlier name in the table
(English first), then code point order.  The same order picks the *primary* source
folder when several source folders have one role.

Several source folders with one role (say "Sent" and "Sent Items" on a server that
marks no \\Sent, or two folders it marks \\Sent) are never merged without a rule (issue
12): the best of them (SPECIAL-USE first, then a well-known name, shallow, canonical) goes
to the destination's folder with that role; the others are ordinary folders, kept apart
(``policy/rules.py``: " (2)" when their name is taken) and the plan says why.  A rule
(``--rename "Sent Items=Sent"``) merges them, their messages unioned (docs/folders.md).

When the destination has no folder with the role, the source folders go to the primary
source folder's own name (its last component) at the destination's top level, and the
folder is created with ``CREATE name (USE (\\Sent))`` when the destination announces
CREATE-SPECIAL-USE (RFC 6154 section 3).

Pure functions on decoded names; the caller supplies LIST attributes (upper-cased, as
``yippiemove.imap.client.MailboxInfo.flags``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .folders import INBOX, Namespace, split_name

__all__ = [
    "ATTRIBUTES",
    "GMAIL_CONTAINERS",
    "MAPPED_ROLES",
    "ROLES",
    "WELL_KNOWN",
    "XLIST_ATTRIBUTES",
    "Box",
    "Role",
    "SpecialTarget",
    "destination_roles",
    "lookalike",
    "normalize",
    "plan_special",
    "role_by_attribute",
    "role_by_name",
    "role_of",
    "server_marks",
]

ROLES = ("sent", "drafts", "trash", "junk", "archive", "all", "flagged")
MAPPED_ROLES = frozenset(("sent", "drafts", "trash", "junk", "archive"))
#: RFC 6154 attribute of each role, as servers spell it.
ATTRIBUTES = {
    "sent": "\\Sent",
    "drafts": "\\Drafts",
    "trash": "\\Trash",
    "junk": "\\Junk",
    "archive": "\\Archive",
    "all": "\\All",
    "flagged": "\\Flagged",
}
#: Gmail's XLIST spellings (before RFC 6154) of the same roles; some servers still send
#: them in LIST.  (XLIST's \\Sent, \\Drafts, \\Trash are spelled as in RFC 6154.)
XLIST_ATTRIBUTES = {"\\AllMail": "all", "\\Spam": "junk", "\\Starred": "flagged"}
_BY_ATTRIBUTE = {attr.upper(): role for role, attr in ATTRIBUTES.items()}
_BY_ATTRIBUTE.update((attr.upper(), role) for attr, role in XLIST_ATTRIBUTES.items())
#: How the plan's reasons name a role ("named like a drafts folder").
_KIND = {
    "sent": "a sent",
    "drafts": "a drafts",
    "trash": "a trash",
    "junk": "a junk",
    "archive": "an archive",
    "all": "an all-mail",
    "flagged": "a starred",
}
#: Role -> the folders a server marks with the role's attribute (see server_marks).
Marks = Mapping[str, tuple[str, ...]]
GMAIL_CONTAINERS = ("[Gmail]", "[Google Mail]")

#: Well-known names per role, most canonical first (the order breaks ties).
WELL_KNOWN: dict[str, tuple[str, ...]] = {
    "sent": (
        "Sent",
        "Sent Items",
        "Sent Messages",
        "Sent Mail",
        "Sent Email",
        "Sent-Mail",
        # German
        "Gesendet",
        "Gesendete Objekte",
        "Gesendete Elemente",
        "Gesendete Nachrichten",
        # French
        "Envoyés",
        "Éléments envoyés",
        "Messages envoyés",
        "Envoyé",
        # Spanish
        "Enviados",
        "Elementos enviados",
        "Mensajes enviados",
        "Correo enviado",
        # Italian
        "Posta inviata",
        "Inviati",
        "Elementi inviati",
        "Messaggi inviati",
        "Inviata",
        # Dutch
        "Verzonden",
        "Verzonden items",
        "Verzonden berichten",
        # Portuguese
        "Itens enviados",
        "Enviadas",
        "Mensagens enviadas",
        "E-mails enviados",
        # Polish
        "Wysłane",
        "Elementy wysłane",
        "Wysłane elementy",
        # Swedish
        "Skickat",
        "Skickade",
        "Skickade objekt",
        "Skickade meddelanden",
        # Russian
        "Отправленные",
        "Отправленные элементы",
        # Danish, Norwegian, Finnish, Czech, Turkish
        "Sendt",
        "Sendte elementer",
        "Sendt post",
        "Lähetetyt",
        "Lähetetyt kohteet",
        "Odeslané",
        "Odeslaná pošta",
        "Gönderilmiş Öğeler",
        "Gönderilenler",
    ),
    "drafts": (
        "Drafts",
        "Draft",
        "Entwürfe",
        "Brouillons",
        "Brouillon",
        "Borradores",
        "Bozze",
        "Concepten",
        "Rascunhos",
        "Wersje robocze",
        "Kopie robocze",
        "Utkast",
        "Черновики",
        "Kladder",
        "Luonnokset",
        "Koncepty",
        "Taslaklar",
    ),
    "trash": (
        "Trash",
        "Deleted Items",
        "Deleted Messages",
        "Deleted",
        "Bin",
        "Papierkorb",
        "Gelöschte Objekte",
        "Gelöschte Elemente",
        "Gelöscht",
        "Corbeille",
        "Éléments supprimés",
        "Messages supprimés",
        "Papelera",
        "Elementos eliminados",
        "Cestino",
        "Posta eliminata",
        "Elementi eliminati",
        "Prullenbak",
        "Verwijderde items",
        "Lixeira",
        "Lixo",
        "Itens excluídos",
        "Itens eliminados",
        "Kosz",
        "Elementy usunięte",
        "Papperskorgen",
        "Borttagna objekt",
        "Borttaget",
        "Корзина",
        "Удаленные",
        "Удалённые",
        "Удаленные элементы",
        "Papirkurv",
        "Slettede elementer",
        "Slettet post",
        "Roskakori",
        "Poistetut",
        "Koš",
        "Silinmiş Öğeler",
        "Çöp Kutusu",
    ),
    "junk": (
        "Junk",
        "Spam",
        "Junk Email",
        "Junk E-mail",
        "Junk Mail",
        "Bulk Mail",
        "Junk-E-Mail",
        "Spamverdacht",
        "Courrier indésirable",
        "Indésirables",
        "Pourriel",
        "Correo no deseado",
        "Posta indesiderata",
        "Ongewenste e-mail",
        "Ongewenst",
        "Lixo eletrônico",
        "Lixo electrónico",
        "Email de lixo",
        "Wiadomości-śmieci",
        "Skräppost",
        "Спам",
        "Нежелательная почта",
        "Uønsket e-post",
        "Uønsket post",
        "Roskaposti",
        "Nevyžádaná pošta",
        "Gereksiz E-posta",
    ),
    "archive": (
        "Archive",
        "Archives",
        "Archiv",
        "Archivio",
        "Archief",
        "Archivo",
        "Arquivo",
        "Arquivo morto",
        "Archiwum",
        "Arkiv",
        "Архив",
        "Arkisto",
        "Arşiv",
    ),
    # Views: recognised by name only under a Gmail container (see the module docstring).
    "all": (
        "All Mail",
        "Alle Nachrichten",
        "Tous les messages",
        "Todos",
        "Tutti i messaggi",
        "Alle berichten",
        "Todos os e-mails",
        "Wszystkie",
        "Alla mail",
        "Вся почта",
    ),
    "flagged": (
        "Starred",
        "Flagged",
        "Markiert",
        "Suivis",
        "Destacados",
        "Speciali",
        "Met ster",
        "Com estrela",
        "Oznaczone gwiazdką",
        "Stjärnmärkt",
        "Помеченные",
    ),
}
_VIEWS = frozenset(("all", "flagged"))


def normalize(name: str) -> str:
    """Comparison form of a folder name component: NFC, case-folded, single spaces."""
    return " ".join(unicodedata.normalize("NFC", name).casefold().split())


#: normalized name -> (role, rank in the role's list); the first role listing a name wins.
_NAME_INDEX: dict[str, tuple[str, int]] = {}
for _role, _names in WELL_KNOWN.items():
    for _rank, _name in enumerate(_names):
        _NAME_INDEX.setdefault(normalize(_name), (_role, _rank))
_GMAIL = frozenset(normalize(c) for c in GMAIL_CONTAINERS)


@dataclass(frozen=True)
class Box:
    """A folder as LIST shows it: decoded name and upper-cased attributes."""

    name: str
    attributes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Role:
    """A folder's role and how it was found ("special-use" or "name")."""

    role: str
    how: str
    rank: int = 0  # the name's position in WELL_KNOWN (0 for SPECIAL-USE without name)

    @property
    def attribute(self) -> str:
        return ATTRIBUTES[self.role]


def role_by_attribute(attributes: Iterable[str]) -> str | None:
    """The role of RFC 6154 attributes; the first in ROLES order if there are several."""
    found = {_BY_ATTRIBUTE[a.upper()] for a in attributes if a.upper() in _BY_ATTRIBUTE}
    return next((r for r in ROLES if r in found), None)


def _name_entry(name: str, ns: Namespace) -> tuple[str, int] | None:
    try:
        parts = split_name(name, ns)
    except ValueError:
        return None
    if len(parts) == 1:
        if parts[0] == INBOX:
            return None
    elif len(parts) == 2:
        container = parts[0]
        if container != INBOX and normalize(container) not in _GMAIL:
            return None
    else:
        return None
    entry = _NAME_INDEX.get(normalize(parts[-1]))
    if entry is None:
        return None
    if entry[0] in _VIEWS and (len(parts) != 2 or normalize(parts[0]) not in _GMAIL):
        return None
    return entry


def role_by_name(name: str, ns: Namespace) -> str | None:
    """The role a folder's name implies (see the module docstring for where it counts)."""
    entry = _name_entry(name, ns)
    return entry[0] if entry else None


def server_marks(boxes: Iterable[Box]) -> dict[str, tuple[str, ...]]:
    """Role -> the folders a server marks with the role's attribute (code point order).

    Give it the server's whole LIST: a role the server marks anywhere is a role whose
    names are not used on that server (:func:`role_of` with ``marks``).
    """
    found: dict[str, set[str]] = {}
    for box in boxes:
        for attr in box.attributes:
            role = _BY_ATTRIBUTE.get(attr.upper())
            if role is not None:
                found.setdefault(role, set()).add(box.name)
    return {role: tuple(sorted(names)) for role, names in found.items()}


def role_of(box: Box, ns: Namespace, marks: Marks | None = None) -> Role | None:
    """SPECIAL-USE attribute first, else the name.

    With ``marks`` (:func:`server_marks` of the box's server), a name counts only for a
    role the server marks no folder with; without, names count for every role.
    """
    entry = _name_entry(box.name, ns)
    role = role_by_attribute(box.attributes)
    if role is not None:
        rank = entry[1] if entry and entry[0] == role else len(WELL_KNOWN[role])
        return Role(role, "special-use", rank)
    if entry is not None and (marks is None or entry[0] not in marks):
        return Role(entry[0], "name", entry[1])
    return None


def _quoted(names: Sequence[str]) -> str:
    shown = [repr(n) for n in names]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def lookalike(box: Box, ns: Namespace, marks: Marks, side: str) -> tuple[str, str] | None:
    """(role, reason) for a folder named like a special folder whose server marks another
    folder with that role: it is an ordinary folder, and the reason says why.  ``side``
    is "source" or "destination"."""
    entry = _name_entry(box.name, ns)
    if entry is None or role_by_attribute(box.attributes) is not None:
        return None
    role = entry[0]
    marked = [n for n in marks.get(role, ()) if n != box.name]
    if not marked:
        return None
    return role, (
        f"named like {_KIND[role]} folder, but the {side} marks {_quoted(marked)} as "
        f"{ATTRIBUTES[role]} (SPECIAL-USE): kept as an ordinary folder"
    )


def _preference(box: Box, role: Role, ns: Namespace) -> tuple[int, int, int, int, str]:
    try:
        depth = len(split_name(box.name, ns))
    except ValueError:
        depth = 99
    by_name = _name_entry(box.name, ns)
    named = 0 if by_name is not None and by_name[0] == role.role else 1
    return (0 if role.how == "special-use" else 1, named, depth, role.rank, box.name)


def destination_roles(boxes: Sequence[Box], ns: Namespace) -> dict[str, tuple[Box, Role]]:
    """The destination's folder for each mapped role (views are never targets).

    ``boxes`` is the destination's whole LIST: a role it marks by SPECIAL-USE anywhere
    is found by that attribute only, never by a name."""
    marks = server_marks(boxes)
    found: dict[str, list[tuple[Box, Role]]] = {}
    for box in boxes:
        if {"\\NOSELECT", "\\NONEXISTENT"} & box.attributes:
            continue
        role = role_of(box, ns, marks)
        if role is not None and role.role in MAPPED_ROLES:
            found.setdefault(role.role, []).append((box, role))
    return {r: min(cands, key=lambda c: _preference(c[0], c[1], ns)) for r, cands in found.items()}


def _unmarked(side: str, attribute: str) -> str:
    return f"the {side} marks no folder as {attribute} (SPECIAL-USE): names decide"


@dataclass(frozen=True)
class SpecialTarget:
    """Where a source folder with a mapped role goes.

    ``dest`` is the existing destination folder (exact name), or None when the
    destination has none: then ``parts`` (path components relative to the destination's
    personal namespace) name the folder to create and ``use`` is the attribute to create
    it with (None without CREATE-SPECIAL-USE).  ``primary`` is the source folder whose
    name is used; ``members`` every source folder of the role, primary first.
    """

    role: Role
    dest: str | None
    parts: tuple[str, ...]
    use: str | None
    primary: str
    members: tuple[str, ...]
    reasons: tuple[str, ...]


def plan_special(
    sources: Sequence[Box],
    src: Namespace,
    dest_boxes: Sequence[Box],
    dst: Namespace,
    *,
    create_special_use: bool = False,
    marks: Marks | None = None,
) -> tuple[dict[str, SpecialTarget], dict[str, str]]:
    """Map source folders with a role to the destination's folder with that role.

    ``marks``: :func:`server_marks` of the source server's whole LIST (a role it marks
    is found by SPECIAL-USE only); None when unknown: names count for every role.
    ``dest_boxes`` is the destination's whole LIST (see :func:`destination_roles`).

    Returns (source name -> SpecialTarget for folders with a mapped role,
    source name -> note for folders that are views (\\All, \\Flagged) and keep their
    name).
    """
    roles: dict[str, list[tuple[Box, Role]]] = {}
    views: dict[str, str] = {}
    for box in sources:
        role = role_of(box, src, marks)
        if role is None:
            continue
        if role.role not in MAPPED_ROLES:
            how = "SPECIAL-USE" if role.how == "special-use" else "its name"
            views[box.name] = (
                f"the source's {role.attribute} folder (by {how}) is a view on many servers; "
                "copied as an ordinary folder"
            )
            continue
        roles.setdefault(role.role, []).append((box, role))
    theirs = destination_roles(dest_boxes, dst)
    out: dict[str, SpecialTarget] = {}
    for name in ROLES:
        members = roles.get(name)
        if not members:
            continue
        members.sort(key=lambda c: _preference(c[0], c[1], src))
        primary_box, primary_role = members[0]
        # Never merged without a rule (issue 12): only the best of several source folders
        # with one role goes to the destination's folder of that role; the others are
        # ordinary folders (policy/rules.py keeps them apart when their name is taken).
        for box, role in members[1:]:
            how = "SPECIAL-USE" if role.how == "special-use" else "its name"
            views[box.name] = (
                f"{box.name!r} is also a {role.attribute} folder of the source (by {how}), "
                f"but {primary_box.name!r} is the one that goes to the destination's: two "
                "source folders are merged only by a rule (--rename): kept as an ordinary "
                "folder"
            )
        members = members[:1]
        member_names = (primary_box.name,)
        target = theirs.get(name)
        for box, role in members:
            how = "SPECIAL-USE" if role.how == "special-use" else "its name"
            reasons = [f"{box.name!r} is the source's {role.attribute} folder (by {how})"]
            if marks is not None and role.how == "name":
                reasons.append(_unmarked("source", role.attribute))
            if target is not None:
                dest_box, dest_role = target
                dhow = "SPECIAL-USE" if dest_role.how == "special-use" else "its name"
                reasons.append(
                    f"{dest_box.name!r} is the destination's {role.attribute} folder (by {dhow})"
                )
                if dest_role.how == "name":
                    reasons.append(_unmarked("destination", role.attribute))
                parts = split_name(dest_box.name, dst)
                dest: str | None = dest_box.name
                use = None
            else:
                last = split_name(primary_box.name, src)[-1]
                parts = (last,)
                dest = None
                use = primary_role.attribute if create_special_use else None
                why = f"the destination has no {role.attribute} folder: it goes to {last!r}"
                if use:
                    why += f", created with the SPECIAL-USE attribute {use} (CREATE-SPECIAL-USE)"
                reasons.append(why)
            out[box.name] = SpecialTarget(
                role, dest, parts, use, primary_box.name, member_names, tuple(reasons)
            )
    return out, views
