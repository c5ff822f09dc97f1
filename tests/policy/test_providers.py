"""Provider presets: lookups, the sources behind every figure, and the limits applied."""

from __future__ import annotations

from pathlib import Path

import pytest

from yippiemove.policy import providers
from yippiemove.policy.providers import GENERIC, PROVIDERS, bandwidth_warnings
from yippiemove.transfer.model import Options
from yippiemove.transfer.run import apply_limits
from yippiemove.web import presets as web_presets

DOCS = Path(__file__).resolve().parents[2] / "docs" / "providers.md"

REQUIRED = {
    "gmail",
    "google-workspace",
    "microsoft365",
    "outlook",
    "yahoo",
    "aol",
    "icloud",
    "fastmail",
    "zoho",
    "gmx",
    "webde",
    "mailcom",
    "yandex",
    "generic",
}


def test_every_required_provider_is_there_once():
    keys = providers.keys()
    assert REQUIRED <= set(keys)
    assert len(keys) == len(set(keys))
    assert keys[-1] == "generic"


@pytest.mark.parametrize("p", PROVIDERS, ids=lambda p: p.key)
def test_every_preset_has_a_server(p):
    assert p.host and p.host == p.host.lower() and "." in p.host
    assert p.security in ("tls", "starttls")
    assert p.port == (993 if p.security == "tls" else 143)
    assert p.username in ("address", "localpart")
    assert p.label
    assert p.domains or p.business, "found neither by domain nor as a business service"


def test_generic_has_no_server_and_no_limits():
    assert GENERIC.generic and GENERIC.host is None
    assert {k for k, v in GENERIC.figures().items() if v is not None} == set()


def test_no_domain_belongs_to_two_providers():
    seen: dict[str, str] = {}
    for p in PROVIDERS:
        for d in p.domains:
            assert d == d.lower() and "@" not in d
            assert d not in seen, f"{d} in {seen.get(d)} and {p.key}"
            seen[d] = p.key


@pytest.mark.parametrize("p", [*PROVIDERS, GENERIC], ids=lambda p: p.key)
def test_every_figure_has_a_source_listed_in_the_docs(p):
    docs = DOCS.read_text(encoding="utf-8")
    assert f"`{p.key}`" in docs and p.label in docs
    for figure, value in p.figures().items():
        if value is None:
            continue
        sources = p.sources.get(figure, ())
        assert sources, f"{p.key}: {figure} = {value!r} has no source"
        for s in sources:
            assert s.url.startswith(("https://", "http://")), s.url
            assert s.kind in ("provider", "reference", "third-party")
            assert s.looked_up == "2026-11-26"
            assert s.url in docs, f"{p.key}: {s.url} is not in docs/providers.md"
    # No source is kept for a figure that is unknown (it would claim too much).
    for figure in p.sources:
        assert p.figures()[figure] is not None, f"{p.key}: source for unknown {figure}"


def test_docs_table_states_the_enforced_sizes():
    docs = DOCS.read_text(encoding="utf-8")
    for p in PROVIDERS:
        if p.max_message_size is not None:
            assert f"{p.max_message_size:,} bytes" in docs, p.key


# ------------------------------------------------------------------------- lookups


@pytest.mark.parametrize(
    ("host", "user", "key"),
    [
        ("imap.gmail.com", None, "gmail"),
        ("IMAP.Gmail.com.", None, "gmail"),
        ("imap.googlemail.com", "a@googlemail.com", "gmail"),
        ("imap.gmail.com", "ada@gmail.com", "gmail"),
        ("imap.gmail.com", "ada@example-corp.com", "google-workspace"),
        ("outlook.office365.com", None, "microsoft365"),
        ("outlook.office365.com", "bo@hotmail.co.uk", "outlook"),
        ("outlook.office365.com", "bo@contoso.com", "microsoft365"),
        ("outlook.office365.com", "bo@contoso.onmicrosoft.com", "microsoft365"),
        ("imap-mail.outlook.com", None, "outlook"),
        ("export.imap.aol.com", "x@aol.com", "aol"),
        ("imappro.zoho.eu", "me@mycompany.eu", "zoho"),
        ("imap.yandex.ru", None, "yandex"),
        ("imap.gmx.net", None, "gmx"),
        ("imap.gmx.com", None, "gmx-com"),
        ("imap.mail.me.com", "someone", "icloud"),
    ],
)
def test_for_host(host, user, key):
    p = providers.for_host(host, user)
    assert p is not None and p.key == key


@pytest.mark.parametrize("host", ["mail.example.org", "127.0.0.1", "gmail.com", "imap.gmail"])
def test_for_host_unknown(host):
    assert providers.for_host(host) is None
    assert providers.for_host(host, "ada@gmail.com") is None


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("ada@gmail.com", "gmail"),
        ("Ada@GoogleMail.COM", "gmail"),
        ("bo@outlook.com", "outlook"),
        ("bo@hotmail.com", "outlook"),
        ("bo@live.com", "outlook"),
        ("bo@msn.com", "outlook"),
        ("c@yahoo.co.uk", "yahoo"),
        ("c@ymail.com", "yahoo"),
        ("d@aol.com", "aol"),
        ("e@icloud.com", "icloud"),
        ("e@me.com", "icloud"),
        ("f@fastmail.com", "fastmail"),
        ("g@zoho.com", "zoho"),
        ("h@gmx.de", "gmx"),
        ("h@gmx.net", "gmx"),
        ("h@gmx.at", "gmx"),
        ("h@gmx.ch", "gmx"),
        ("h@gmx.com", "gmx-com"),
        ("i@web.de", "webde"),
        ("j@mail.com", "mailcom"),
        ("k@yandex.ru", "yandex"),
        ("k@ya.ru", "yandex"),
        ("l@x.onmicrosoft.com", None),  # a subdomain is not the domain
        ("m@example.org", None),
        ("no-at-sign", None),
    ],
)
def test_for_address(address, key):
    p = providers.for_address(address)
    assert (p.key if p else None) == key


def test_business_services_are_not_found_by_a_custom_domain():
    assert providers.for_address("boss@example-corp.com") is None
    assert all(providers.for_address(f"x@{d}") is None for d in ("example.com", "corp.io"))


def test_by_key():
    assert providers.by_key("gmail") is providers.by_key(" GMAIL ")
    assert providers.by_key("generic") is GENERIC
    assert providers.by_key("nope") is None


def test_web_cards_come_from_the_table():
    for card in web_presets.PRESETS:
        p = providers.by_key(card.key)
        assert p is not None
        assert (card.host, card.port, card.security, card.hint) == (
            p.host,
            p.port,
            p.security,
            p.hint,
        )
    assert [c.key for c in web_presets.PRESETS] == [
        "gmail",
        "outlook",
        "yahoo",
        "icloud",
        "fastmail",
    ]
    assert web_presets.preset_for("IMAP.GMAIL.COM", 993, "tls") == "gmail"
    assert web_presets.preset_for("imap.gmail.com", 143, "starttls") == "other"


# ------------------------------------------------------------------------- limits


def test_apply_limits_caps_connections_by_the_smaller_side_and_says_so():
    gmail = providers.by_key("gmail")
    opts, notes = apply_limits(Options(connections=16), GENERIC, gmail)
    assert opts.connections == 15
    # The workers to far servers are capped the same way (the default asks for 6).
    assert apply_limits(Options(far_connections=20), GENERIC, gmail)[0].far_connections == 15
    assert apply_limits(Options(), GENERIC, gmail)[0].far_connections == 6
    assert any("connections lowered from 16 to 15" in n and "Gmail" in n for n in notes)
    # The source side counts the same way.
    opts, notes = apply_limits(Options(connections=16), gmail, GENERIC)
    assert opts.connections == 15
    assert any("(the source)" in n for n in notes)


def test_apply_limits_leaves_fewer_connections_alone():
    opts, notes = apply_limits(Options(connections=4), providers.by_key("gmail"), GENERIC)
    assert opts.connections == 4
    assert not any("connections" in n for n in notes)


def test_apply_limits_takes_the_destination_size_limit_only():
    icloud = providers.by_key("icloud")
    original = Options()
    opts, notes = apply_limits(original, icloud, GENERIC)
    assert opts.max_message_size is None  # the source's limit does not matter
    opts, notes = apply_limits(original, GENERIC, icloud)
    assert opts.max_message_size == 20 * 1024 * 1024
    assert opts.max_message_size_label == "iCloud Mail's 20 MB limit"
    assert any("larger than 20 MB" in n for n in notes)
    assert original.max_message_size is None  # not changed in place


def test_apply_limits_keeps_a_smaller_limit_already_set():
    opts, _ = apply_limits(
        Options(max_message_size=1000, max_message_size_label="mine"),
        GENERIC,
        providers.by_key("gmail"),
    )
    assert (opts.max_message_size, opts.max_message_size_label) == (1000, "mine")


def test_apply_limits_generic_changes_nothing():
    original = Options(connections=16)
    opts, notes = apply_limits(original, GENERIC, GENERIC)
    assert opts == original and notes == []


def test_apply_limits_warns_about_oauth_only_providers():
    _, notes = apply_limits(Options(), providers.by_key("outlook"), GENERIC)
    assert any("OAuth2" in n and "Outlook.com" in n for n in notes)


def test_bandwidth_warnings_name_the_cap_and_its_source():
    gmail = providers.by_key("gmail")
    mib = 1024 * 1024
    assert bandwidth_warnings(400 * mib, gmail, gmail) == []
    (up,) = bandwidth_warnings(600 * mib, GENERIC, gmail)
    assert "500 MB per day" in up and "upload" in up
    assert "https://support.google.com/a/answer/1071518" in up
    assert "about 2 days" in up
    both = bandwidth_warnings(3000 * mib, gmail, gmail)
    assert len(both) == 2 and "2,500 MB per day" in both[0] and "download" in both[0]
    assert bandwidth_warnings(10**12, GENERIC, GENERIC) == []


@pytest.mark.parametrize(
    ("n", "text"),
    [(35_651_584, "34 MB"), (150 * 1024 * 1024, "150 MB"), (1500, "1,500 bytes")],
)
def test_format_size(n, text):
    assert providers.format_size(n) == text
