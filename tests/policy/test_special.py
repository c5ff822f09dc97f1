"""Special folders (RFC 6154 SPECIAL-USE and well-known names): roles and mapping."""

import pytest

from yippiemove.policy.folders import Namespace
from yippiemove.policy.special import (
    WELL_KNOWN,
    Box,
    destination_roles,
    lookalike,
    normalize,
    plan_special,
    role_by_attribute,
    role_by_name,
    role_of,
    server_marks,
)

SLASH = Namespace("", "/")
DOT = Namespace("", ".")
CYRUS = Namespace("INBOX.", ".")


def box(name: str, *attrs: str) -> Box:
    return Box(name, frozenset(a.upper() for a in attrs))


# --- roles by name ------------------------------------------------------------------

BY_NAME = [
    # English, clients and providers
    ("Sent", SLASH, "sent"),
    ("sent", SLASH, "sent"),
    ("SENT ITEMS", SLASH, "sent"),
    ("Sent Messages", SLASH, "sent"),
    ("Deleted Items", SLASH, "trash"),
    ("Deleted Messages", SLASH, "trash"),
    ("Junk Email", SLASH, "junk"),
    ("Junk E-mail", SLASH, "junk"),
    ("Spam", SLASH, "junk"),
    ("Bulk Mail", SLASH, "junk"),
    ("Drafts", SLASH, "drafts"),
    ("Archive", SLASH, "archive"),
    ("Archives", SLASH, "archive"),
    # localized
    ("Gesendete Objekte", SLASH, "sent"),
    ("Gesendet", SLASH, "sent"),
    ("Papierkorb", SLASH, "trash"),
    ("Entwürfe", SLASH, "drafts"),
    ("Éléments envoyés", SLASH, "sent"),
    ("éléments ENVOYÉS", SLASH, "sent"),
    ("Corbeille", SLASH, "trash"),
    ("Courrier indésirable", SLASH, "junk"),
    ("Elementos enviados", SLASH, "sent"),
    ("Papelera", SLASH, "trash"),
    ("Posta inviata", SLASH, "sent"),
    ("Cestino", SLASH, "trash"),
    ("Verzonden items", SLASH, "sent"),
    ("Prullenbak", SLASH, "trash"),
    ("Itens enviados", SLASH, "sent"),
    ("Lixeira", SLASH, "trash"),
    ("Wysłane", SLASH, "sent"),
    ("Kosz", SLASH, "trash"),
    ("Skickat", SLASH, "sent"),
    ("Papperskorgen", SLASH, "trash"),
    ("Отправленные", SLASH, "sent"),
    ("Корзина", SLASH, "trash"),
    ("Спам", SLASH, "junk"),
    ("Черновики", SLASH, "drafts"),
    # white space and Unicode normal forms
    ("  Sent   Items ", SLASH, "sent"),
    ("Entwu\u0308rfe", SLASH, "drafts"),  # decomposed ü
    # positions: under INBOX, INBOX-rooted namespaces, Gmail containers
    ("INBOX/Sent", SLASH, "sent"),
    ("inbox/Trash", SLASH, "trash"),
    ("INBOX.Sent", CYRUS, "sent"),
    ("INBOX.Gesendete Objekte", CYRUS, "sent"),
    ("[Gmail]/Sent Mail", SLASH, "sent"),
    ("[Gmail]/Bin", SLASH, "trash"),
    ("[Google Mail]/Gesendet", SLASH, "sent"),
    ("[Google Mail]/Papierkorb", SLASH, "trash"),
    ("[Gmail]/All Mail", SLASH, "all"),
    ("[Gmail]/Starred", SLASH, "flagged"),
    # not special
    ("Projects/Sent", SLASH, None),
    ("Archive/2019", SLASH, None),
    ("INBOX/Sent/Old", SLASH, None),
    ("INBOX.Projects.Sent", CYRUS, None),
    ("INBOX", SLASH, None),
    ("Sent Stuff", SLASH, None),
    ("All Mail", SLASH, None),  # views only by name under a Gmail container
    ("Starred", SLASH, None),
    ("Other/All Mail", SLASH, None),
    ("Sent.Old", SLASH, None),  # "." is an ordinary character on a "/" server
]


@pytest.mark.parametrize(("name", "ns", "role"), BY_NAME)
def test_role_by_name(name: str, ns: Namespace, role: str | None) -> None:
    assert role_by_name(name, ns) == role


def test_dot_separator_names() -> None:
    assert role_by_name("INBOX.Sent", DOT) == "sent"
    assert role_by_name("Sent.Old", DOT) is None


def test_every_well_known_name_is_found_and_belongs_to_one_role() -> None:
    seen: dict[str, str] = {}
    for role, names in WELL_KNOWN.items():
        for name in names:
            key = normalize(name)
            assert key not in seen, f"{name!r} is listed for {seen.get(key)} and {role}"
            seen[key] = role
            where = f"[Gmail]/{name}" if role in ("all", "flagged") else name
            assert role_by_name(where, SLASH) == role, name


# --- roles by attribute ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "role"),
    [
        ({"\\SENT"}, "sent"),
        ({"\\Sent"}, "sent"),
        ({"\\HASNOCHILDREN", "\\TRASH"}, "trash"),
        ({"\\JUNK"}, "junk"),
        ({"\\ARCHIVE"}, "archive"),
        ({"\\ALL"}, "all"),
        ({"\\FLAGGED"}, "flagged"),
        ({"\\DRAFTS"}, "drafts"),
        ({"\\ARCHIVE", "\\SENT"}, "sent"),  # several: the first in ROLES order
        ({"\\HASCHILDREN"}, None),
        (set(), None),
    ],
)
def test_role_by_attribute(attrs: set[str], role: str | None) -> None:
    assert role_by_attribute(attrs) == role


def test_special_use_beats_the_name() -> None:
    r = role_of(box("Trash", "\\Junk"), SLASH)
    assert r is not None and (r.role, r.how) == ("junk", "special-use")
    r = role_of(box("Papierkorb"), SLASH)
    assert r is not None and (r.role, r.how) == ("trash", "name")
    # anywhere in the tree when the server says so
    r = role_of(box("Projects/Outgoing", "\\Sent"), SLASH)
    assert r is not None and r.role == "sent"
    assert role_of(box("Projects/Sent"), SLASH) is None


# --- the destination's folders --------------------------------------------------------


def test_destination_prefers_special_use_then_names() -> None:
    dest = [
        box("INBOX"),
        box("Sent"),  # a name only
        box("Outgoing", "\\Sent"),  # the server says this one
        box("Trash"),
        box("Deleted Items"),
        box("Junk", "\\Noselect"),  # not a folder one can append to
        box("[Gmail]/All Mail", "\\All"),  # views are never targets
    ]
    roles = destination_roles(dest, SLASH)
    assert roles["sent"][0].name == "Outgoing"
    assert roles["trash"][0].name == "Trash"  # English canonical name first
    assert "junk" not in roles
    assert "all" not in roles


def test_two_special_use_folders_prefer_the_well_known_name() -> None:
    roles = destination_roles([box("Outbox copies", "\\Sent"), box("Sent", "\\Sent")], SLASH)
    assert roles["sent"][0].name == "Sent"


# --- mapping ----------------------------------------------------------------------------


def test_source_sent_goes_to_the_destinations_sent_items() -> None:
    sources = [box("INBOX"), box("Sent", "\\Sent"), box("Work")]
    dest = [box("INBOX"), box("Sent Items", "\\Sent")]
    special, views = plan_special(sources, SLASH, dest, DOT)
    assert set(special) == {"Sent"}
    st = special["Sent"]
    assert st.dest == "Sent Items" and st.use is None and st.role.role == "sent"
    assert any("'Sent Items' is the destination's \\Sent folder" in r for r in st.reasons)
    assert views == {}


def test_of_several_source_folders_of_one_role_only_the_best_goes() -> None:
    """Never merged without a rule (issue 12): the others are ordinary folders."""
    sources = [box("Sent Items"), box("Sent", "\\Sent"), box("INBOX/Sent")]
    special, notes = plan_special(sources, SLASH, [box("Gesendet", "\\Sent")], SLASH)
    assert {n: s.dest for n, s in special.items()} == {"Sent": "Gesendet"}
    assert special["Sent"].primary == "Sent"  # SPECIAL-USE first
    assert special["Sent"].members == ("Sent",)
    for other in ("Sent Items", "INBOX/Sent"):
        assert "merged only by a rule" in notes[other], notes


def test_missing_destination_folder_uses_the_source_name_at_the_top_level() -> None:
    sources = [box("[Gmail]/Sent Mail", "\\Sent"), box("INBOX.Trash")]
    special, _ = plan_special(
        sources, Namespace("", "/"), [box("INBOX")], DOT, create_special_use=True
    )
    sent = special["[Gmail]/Sent Mail"]
    assert (sent.dest, sent.parts, sent.use) == (None, ("Sent Mail",), "\\Sent")
    assert any("CREATE-SPECIAL-USE" in r for r in sent.reasons)
    special, _ = plan_special(sources, SLASH, [box("INBOX")], DOT, create_special_use=False)
    assert special["[Gmail]/Sent Mail"].use is None


def test_cyrus_destination_sent_is_found_by_name() -> None:
    special, _ = plan_special([box("Sent Messages")], SLASH, [box("INBOX.Sent")], CYRUS)
    assert special["Sent Messages"].dest == "INBOX.Sent"
    assert special["Sent Messages"].parts == ("Sent",)


def test_views_are_reported_not_mapped() -> None:
    sources = [box("[Gmail]/All Mail", "\\All"), box("[Gmail]/Starred")]
    special, views = plan_special(sources, SLASH, [box("All", "\\All")], SLASH)
    assert special == {}
    assert set(views) == {"[Gmail]/All Mail", "[Gmail]/Starred"}
    assert "view" in views["[Gmail]/All Mail"]


# --- the server's word wins: a role a server marks is never found by a name there -----

#: role -> (its attribute, a localized name the server marks, the English look-alike)
MARKED = {
    "sent": ("\\Sent", "Gesendet", "Sent"),
    "drafts": ("\\Drafts", "Entwürfe", "Drafts"),
    "trash": ("\\Trash", "Papierkorb", "Trash"),
    "junk": ("\\Junk", "Unerwünscht", "Junk"),
    "archive": ("\\Archive", "Archiv", "Archive"),
}


def test_xlist_attributes_are_roles_too() -> None:
    assert role_by_attribute({"\\SPAM"}) == "junk"
    assert role_by_attribute({"\\ALLMAIL"}) == "all"
    assert role_by_attribute({"\\STARRED"}) == "flagged"
    assert server_marks([box("[Gmail]/Spam", "\\Spam"), box("Junk")]) == {"junk": ("[Gmail]/Spam",)}


@pytest.mark.parametrize("role", sorted(MARKED))
def test_a_marked_role_is_not_found_by_name(role: str) -> None:
    attr, marked, alike = MARKED[role]
    boxes = [box("INBOX"), box(marked, attr), box(alike)]
    marks = server_marks(boxes)
    assert marks == {role: (marked,)}
    r = role_of(boxes[1], SLASH, marks)
    assert r is not None and (r.role, r.how) == (role, "special-use")
    assert role_of(boxes[2], SLASH, marks) is None
    assert role_of(boxes[2], SLASH) is not None  # without the server's marks: by name
    look = lookalike(boxes[2], SLASH, marks, "source")
    assert look == (
        role,
        f"named like {'an' if role == 'archive' else 'a'} {role} folder, but the source "
        f"marks {marked!r} as {attr} (SPECIAL-USE): kept as an ordinary folder",
    )
    assert lookalike(boxes[1], SLASH, marks, "source") is None


@pytest.mark.parametrize("role", sorted(MARKED))
def test_source_lookalike_is_not_planned_with_the_role(role: str) -> None:
    attr, marked, alike = MARKED[role]
    sources = [box("INBOX"), box(marked, attr), box(alike)]
    special, views = plan_special(sources, SLASH, [box("INBOX")], DOT, marks=server_marks(sources))
    assert set(special) == {marked} and special[marked].members == (marked,)
    assert views == {}


@pytest.mark.parametrize("role", sorted(MARKED))
def test_destination_lookalike_is_never_the_target(role: str) -> None:
    attr, marked, alike = MARKED[role]
    # The look-alike is listed first and has the canonical name: it still is no target.
    roles = destination_roles([box(alike), box(marked, attr)], SLASH)
    assert roles[role][0].name == marked
    # A look-alike under INBOX, the marked folder deep in the tree: the server's word.
    roles = destination_roles([box(f"INBOX/{alike}"), box(f"Old/{marked}", attr)], SLASH)
    assert roles[role][0].name == f"Old/{marked}"


def test_the_decision_is_per_role() -> None:
    # A server that marks \Sent and \Trash only: its Drafts, Junk and Archive are
    # still found by their names.
    boxes = [
        box("Gesendet", "\\Sent"),
        box("Sent"),
        box("Papierkorb", "\\Trash"),
        box("Trash"),
        box("Drafts"),
        box("Spam"),
        box("Archive"),
    ]
    marks = server_marks(boxes)
    got = {b.name: (r.role if (r := role_of(b, SLASH, marks)) else None) for b in boxes}
    assert got == {
        "Gesendet": "sent",
        "Sent": None,
        "Papierkorb": "trash",
        "Trash": None,
        "Drafts": "drafts",
        "Spam": "junk",
        "Archive": "archive",
    }
    roles = destination_roles(boxes, SLASH)
    assert {r: b.name for r, (b, _) in roles.items()} == {
        "sent": "Gesendet",
        "trash": "Papierkorb",
        "drafts": "Drafts",
        "junk": "Spam",
        "archive": "Archive",
    }
