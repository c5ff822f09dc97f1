"""Provider presets: server, folders, limits and sign-in rules of common mail services.

One table, :data:`PROVIDERS`, is the single source of truth for the command line (an
account given as a bare e-mail address, ``--source-preset``/``--dest-preset``), the web
order form (:mod:`yippiemove.web.presets` derives its cards from it) and the limits the
mover respects (:func:`limits`, :func:`bandwidth_warnings`).

Every figure comes from a source, listed per figure in :attr:`Provider.sources` and, with
what the mover does with it, in ``docs/providers.md`` (a test checks that the two agree).
A figure no source states is ``None`` ("unknown"), never a guess.  Sizes a source gives
in "MB" are read as 2**20 bytes, the larger reading, so that the mover never refuses a
message the provider might accept.

Lookups: :func:`by_key`, :func:`for_host` (exact host name or a known alias; services
that share servers, like Gmail and Google Workspace, are told apart by the user's
domain) and :func:`for_address` (by e-mail domain; Google Workspace and Microsoft 365
custom domains cannot be found this way, only by host or an explicit preset).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "GENERIC",
    "PROVIDERS",
    "Folders",
    "Limits",
    "Provider",
    "Source",
    "bandwidth_warnings",
    "by_key",
    "for_address",
    "for_host",
    "format_size",
    "keys",
    "limits",
]

MiB = 1024 * 1024
LOOKED_UP = "2026-11-26"


@dataclass(frozen=True)
class Source:
    """Where a figure comes from.  ``kind`` is "provider" (the provider's own page or
    server), "reference" (a maintained public reference such as Thunderbird's ISPDB or
    the imapsync FAQ) or "third-party" (a blog or help page of someone else)."""

    url: str
    title: str
    kind: str = "provider"
    looked_up: str = LOOKED_UP


@dataclass(frozen=True)
class Folders:
    """Names of the special folders as the provider's English interface spells them.

    Hints only: servers that announce RFC 6154 SPECIAL-USE attributes are the truth, and
    some providers translate these names into the account's language."""

    sent: str | None = None
    drafts: str | None = None
    trash: str | None = None
    junk: str | None = None
    archive: str | None = None
    all: str | None = None


@dataclass(frozen=True)
class Provider:
    """One mail service.  ``None`` in a limit means that no source states it."""

    key: str
    label: str
    host: str | None
    port: int = 993
    security: str = "tls"  # "tls" (IMAPS) | "starttls"
    #: Other host names of the same IMAP service (found by :func:`for_host`).
    aliases: tuple[str, ...] = ()
    #: E-mail domains the service hosts (found by :func:`for_address`).
    domains: tuple[str, ...] = ()
    #: A business service for custom domains: found by host or preset, not by domain.
    business: bool = False
    #: The IMAP user name: the whole address, or its local part ("alice" of alice@web.de).
    username: str = "address"  # "address" | "localpart"
    folders: Folders = field(default_factory=Folders)
    #: Largest message (bytes) a mailbox of this service can hold.
    max_message_size: int | None = None
    #: Simultaneous IMAP connections allowed per account.
    max_connections: int | None = None
    #: Bytes per day that IMAP may download from / upload to one account.
    download_per_day: int | None = None
    upload_per_day: int | None = None
    #: An app password is needed (at least with two-step verification turned on).
    app_password: bool | None = None
    #: Only OAuth2 sign-in is accepted for IMAP.
    oauth_only: bool = False
    #: The OAuth2 provider (yippiemove.oauth's key: "google", "microsoft") whose
    #: sign-in gives IMAP access to this service; the CLI signs in with it by default.
    oauth_provider: str | None = None
    #: IMAP access must first be switched on in the account's settings.
    imap_must_be_enabled: bool = False
    #: Gmail-style labels: one message shows up in several folders (issue 5).
    gmail_labels: bool = False
    #: One sentence for people signing in (the web order form shows it).
    hint: str = ""
    #: Further facts with their sources in docs/providers.md (not acted upon).
    notes: tuple[str, ...] = field(default=(), repr=False)
    #: Sources per figure: "server", "domains", "folders", "max_message_size",
    #: "max_connections", "bandwidth", "auth".
    sources: Mapping[str, tuple[Source, ...]] = field(default_factory=dict, repr=False)

    @property
    def generic(self) -> bool:
        return self.host is None

    def figures(self) -> dict[str, object]:
        """The figures that need a source, by source key (``None`` = unknown)."""
        return {
            "server": self.host,
            "domains": self.domains or None,
            "folders": self.folders if self.folders != Folders() else None,
            "max_message_size": self.max_message_size,
            "max_connections": self.max_connections,
            "bandwidth": self.download_per_day or self.upload_per_day,
            "auth": True
            if (self.app_password is not None or self.oauth_only or self.imap_must_be_enabled)
            else None,
        }


# ---------------------------------------------------------------------------- sources

_ISPDB = "https://github.com/thunderbird/autoconfig/blob/master/ispdb/"
_IMAPSYNC = "https://imapsync.lamiral.info/FAQ.d/"


def _ispdb(name: str) -> Source:
    return Source(_ISPDB + name, f"Thunderbird ISPDB (autoconfig database), {name}", "reference")


def _imapsync(name: str, title: str) -> Source:
    return Source(_IMAPSYNC + name, f"imapsync FAQ: {title}", "reference")


GOOGLE_BANDWIDTH = Source(
    "https://support.google.com/a/answer/1071518",
    "Google Workspace Admin Help: Gmail bandwidth limits (figures as quoted by the imapsync "
    "Gmail FAQ of 2024-08-20 and a 2016 copy of the page; the live page was not reachable)",
)
IMAPSYNC_GMAIL = _imapsync("FAQ.Gmail.txt", "Imapsync tips for Gmail accounts (2024-08-20)")
GMAIL_APPENDLIMIT = Source(
    "https://imapsync.lamiral.info/FAQ.d/FAQ.Gmail.txt",
    "Gmail's own CAPABILITY answer, APPENDLIMIT=35651584 (RFC 7889), as recorded in public "
    "IMAP transcripts and used as --maxsize 35_651_584 by the imapsync Gmail FAQ",
    "reference",
)
GMAIL_CONNECTIONS = Source(
    "http://email.about.com/od/gmailtips/fl/Know-the-Simultaneous-Gmail-IMAP-Connection-Limit.htm",
    "About.com / Lifewire: Know the Simultaneous Gmail IMAP Connection Limit ('Gmail "
    "supports up to 15 simultaneous connections by IMAP'; Canary Mail's help says the same)",
    "third-party",
)
GMAIL_CONNECTIONS_2008 = Source(
    "http://mail.google.com/support/bin/answer.py?hl=en&answer=97150",
    "Gmail Help (2008): Too many simultaneous connections - then 10 per account",
)
GMAIL_IMAP_ALWAYS_ON = Source(
    "https://note.cloudywing.net/en/devops/digest/%E4%BD%BF%E7%94%A8%E6%87%89%E7%94%A8%E7%A8%8B"
    "%E5%BC%8F%E5%AF%86%E7%A2%BC%E9%80%8F%E9%81%8E%20IMAP%20%E5%AD%98%E5%8F%96%20Gmail",
    "Accessing Gmail via IMAP Using App Passwords (note.cloudywing.net), quoting Gmail Help "
    "'Add Gmail to another email client' (support.google.com/mail/answer/7126229): "
    "'Starting in January 2025, the Enable IMAP or Disable IMAP options will no longer be "
    "available'",
    "third-party",
)
GOOGLE_APP_PASSWORDS = Source(
    "https://support.google.com/accounts/answer/185833",
    "Google Account Help: Sign in with app passwords (2-Step Verification required)",
)
EXO_LIMITS = Source(
    "https://docs.microsoft.com/en-us/office365/servicedescriptions/exchange-online-service-"
    "description/exchange-online-limits",
    "Microsoft: Exchange Online limits, Message limits (150 MB maximum, administrators set "
    "1-150 MB; read in Microsoft's localized source, MicrosoftDocs/OfficeDocs-"
    "O365ServiceDescriptions-pr.de-DE, 2019, whose default was then 25 MB, and a 2025 copy "
    "giving the default as 35 MB send / 36 MB receive)",
)
GOOGLE_XOAUTH2 = Source(
    "https://developers.google.com/workspace/gmail/imap/xoauth2-protocol",
    "Google for Developers: OAuth 2.0 Mechanism (SASL XOAUTH2 for IMAP; scope "
    "https://mail.google.com/, which needs verification for public apps; "
    "https://www.googleapis.com/auth/gmail.imap_admin for domain-wide delegation; read 2026-12-06 for issue 16)",
)
MS_IMAP_OAUTH = Source(
    "https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/"
    "how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth",
    "Microsoft Learn: Authenticate an IMAP, POP or SMTP connection using OAuth (Microsoft 365 "
    "and Outlook.com; scope https://outlook.office.com/IMAP.AccessAsUser.All plus "
    "offline_access; authorization code, device and client-credentials flows; SASL XOAUTH2; "
    "read in its ja-JP and zh-CN versions on 2026-12-06 for issue 16)",
)
IMAPSYNC_O365 = _imapsync("FAQ.Office365.txt", "Imapsync tips for Office365 (2024-06-27)")
EXO_BASIC_AUTH = Source(
    "https://techcommunity.microsoft.com/t5/exchange-team-blog/basic-authentication-"
    "deprecation-in-exchange-online-may-2022/ba-p/3301866",
    "Exchange Team Blog: Basic Authentication Deprecation in Exchange Online - May 2022 "
    "Update (Basic authentication turned off from 1 October 2022; as quoted in GitLab epic "
    "gitlab-org/8259; see also learn.microsoft.com 'Deprecation of Basic authentication in "
    "Exchange Online')",
)
OUTLOOK_MODERN_AUTH = Source(
    "https://techissuestoday.com/how-to-update-outlook-email-settings-to-avoid-losing-access-"
    "after-september-16/",
    "Tech Issues Today: How to update Outlook email settings to avoid losing access after "
    "September 16 (Basic Authentication no longer available for Outlook.com from 16 "
    "September 2024, per a Microsoft support page of June 2024; patriotmail.ai says the "
    "same)",
    "third-party",
)
OUTLOOK_SETTINGS = Source(
    "https://support.microsoft.com/office/pop-imap-and-smtp-settings-for-outlook-com-"
    "d088b986-291d-42b8-9564-9c414e2aa040",
    "Microsoft Support: POP, IMAP, and SMTP settings for Outlook.com (linked from the ISPDB entry)",
)
IMAPSYNC_YAHOO = _imapsync("FAQ.Yahoo.txt", "Imapsync tips for Yahoo (2024-01-26)")
IMAPSYNC_AOL = _imapsync("FAQ.AOL.txt", "Imapsync tips for AOL accounts (2025-09-25)")
YAHOO_SETTINGS = Source(
    "https://help.yahoo.com/kb/new-mail-for-desktop/imap-server-settings-yahoo-mail-sln4075.html",
    "Yahoo Help: IMAP server settings for Yahoo Mail (linked from the ISPDB entry)",
)
APPLE_LIMITS = Source(
    "https://support.apple.com/en-ca/102198",
    "Apple Support: Mailbox size and message sending limits in iCloud ('The size of "
    "incoming and outgoing messages (20MB, up to 5GB with Mail Drop turned on)')",
)
APPLE_SETTINGS = Source(
    "https://support.apple.com/en-us/HT202304",
    "Apple Support: iCloud Mail server settings for other email client apps (imap.mail.me.com, "
    "993, SSL, app-specific password; as summarised by the imapsync iCloud FAQ and the ISPDB "
    "entry that link to it)",
)
FASTMAIL_APP_PASSWORDS = Source(
    "https://www.fastmail.com/help/clients/apppassword.html",
    "Fastmail Help: App passwords ('Every third-party program or app needs its own app "
    "password'; Basic plans have no IMAP)",
)
FASTMAIL_SERVERS = Source(
    "https://www.fastmail.com/help/technical/servernamesandports.html",
    "Fastmail Help: Server names and ports (linked from the ISPDB entry)",
)
ZOHO_IMAP = Source(
    "https://www.zoho.com/mail/help/imap-access.html",
    "Zoho Mail Help: Access via IMAP (enable IMAP access first; application-specific "
    "password with two-factor authentication; imap.zoho.com / imappro.zoho.com)",
)
ZOHO_REGIONS = Source(
    "https://support.bolddesk.com/kb/article/15603/how-to-configure-imap-in-zoho-mail",
    "BoldDesk: How to configure IMAP in Zoho mail (regional hosts imap.zoho.in, "
    "imappro.zoho.in; smartlead.ai shows imap.zoho.com.au, imappro.zoho.com.au)",
    "third-party",
)
ZOHO_SIZE = Source(
    "https://www.zoho.com/mail/help/adminconsole/email-restrictions.html",
    "Zoho Mail Admin Console: Configure Email Restrictions ('Maximum Email Size ... The "
    "maximum size permitted is 40 MB')",
)
GMX_ENABLE = Source(
    "https://hilfe.gmx.net/pop-imap/einschalten.html",
    "GMX Hilfe: POP3 & IMAP einschalten (access must be allowed once; linked from the ISPDB entry)",
)
WEBDE_ENABLE = Source(
    "https://hilfe.web.de/pop-imap/einschalten.html",
    "WEB.DE Hilfe: POP3 & IMAP einschalten (access must be allowed once; linked from the "
    "ISPDB entry)",
)
YANDEX_APP_PASSWORDS = Source(
    "https://yandex.com/support/passport/authorization/app-passwords.html",
    "Yandex ID Help: App passwords (needed for email clients)",
)
IMAPSYNC_YANDEX = _imapsync("FAQ.Yandex.txt", "Imapsync tips for Yandex accounts (imap.yandex.ru)")
MS_FOLDERS = Source(
    "https://learn.microsoft.com/en-us/graph/api/resources/mailfolder",
    "Microsoft Graph: mailFolder resource type, well-known folder names (archive, "
    "deleteditems, drafts, junkemail, sentitems); the English display names as listed by "
    "GemBox.Email's Exchange DefaultFolders reference",
)

# ---------------------------------------------------------------------------- the table

_GMAIL_FOLDERS = Folders(
    sent="[Gmail]/Sent Mail",
    drafts="[Gmail]/Drafts",
    trash="[Gmail]/Trash",
    junk="[Gmail]/Spam",
    all="[Gmail]/All Mail",
)
_GMAIL_COMMON: dict[str, object] = {
    "host": "imap.gmail.com",
    "aliases": ("imap.googlemail.com",),
    "folders": _GMAIL_FOLDERS,
    "max_message_size": 35_651_584,
    "max_connections": 15,
    "download_per_day": 2500 * MiB,
    "upload_per_day": 500 * MiB,
    "app_password": True,
    "oauth_provider": "google",
    "gmail_labels": True,
}
_GMAIL_SOURCES: dict[str, tuple[Source, ...]] = {
    "server": (_ispdb("googlemail.com.xml"),),
    "folders": (IMAPSYNC_GMAIL,),
    "max_message_size": (GMAIL_APPENDLIMIT,),
    "max_connections": (GMAIL_CONNECTIONS, GMAIL_CONNECTIONS_2008),
    "bandwidth": (GOOGLE_BANDWIDTH, IMAPSYNC_GMAIL),
    "auth": (GOOGLE_APP_PASSWORDS, GMAIL_IMAP_ALWAYS_ON, IMAPSYNC_GMAIL, GOOGLE_XOAUTH2),
}

_OUTLOOK_DOMAINS = (
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "windowslive.com",
    "outlook.at",
    "outlook.be",
    "outlook.cl",
    "outlook.cz",
    "outlook.de",
    "outlook.dk",
    "outlook.es",
    "outlook.fr",
    "outlook.hu",
    "outlook.ie",
    "outlook.in",
    "outlook.it",
    "outlook.jp",
    "outlook.kr",
    "outlook.lv",
    "outlook.my",
    "outlook.ph",
    "outlook.pt",
    "outlook.sa",
    "outlook.sg",
    "outlook.sk",
    "outlook.co.id",
    "outlook.co.il",
    "outlook.co.th",
    "outlook.com.ar",
    "outlook.com.au",
    "outlook.com.br",
    "outlook.com.gr",
    "outlook.com.tr",
    "outlook.com.vn",
    "hotmail.be",
    "hotmail.ca",
    "hotmail.cl",
    "hotmail.cz",
    "hotmail.de",
    "hotmail.dk",
    "hotmail.es",
    "hotmail.fi",
    "hotmail.fr",
    "hotmail.gr",
    "hotmail.hu",
    "hotmail.it",
    "hotmail.lt",
    "hotmail.lv",
    "hotmail.my",
    "hotmail.nl",
    "hotmail.no",
    "hotmail.ph",
    "hotmail.rs",
    "hotmail.se",
    "hotmail.sg",
    "hotmail.sk",
    "hotmail.co.id",
    "hotmail.co.il",
    "hotmail.co.in",
    "hotmail.co.jp",
    "hotmail.co.kr",
    "hotmail.co.th",
    "hotmail.co.uk",
    "hotmail.co.za",
    "hotmail.com.ar",
    "hotmail.com.au",
    "hotmail.com.br",
    "hotmail.com.hk",
    "hotmail.com.tr",
    "hotmail.com.tw",
    "hotmail.com.vn",
    "live.at",
    "live.be",
    "live.ca",
    "live.cl",
    "live.cn",
    "live.de",
    "live.dk",
    "live.fi",
    "live.fr",
    "live.hk",
    "live.ie",
    "live.in",
    "live.it",
    "live.jp",
    "live.nl",
    "live.no",
    "live.ru",
    "live.se",
    "live.co.jp",
    "live.co.kr",
    "live.co.uk",
    "live.co.za",
    "live.com.ar",
    "live.com.au",
    "live.com.mx",
    "live.com.my",
    "live.com.ph",
    "live.com.pt",
    "live.com.sg",
    "livemail.tw",
)

PROVIDERS: tuple[Provider, ...] = (
    Provider(
        key="gmail",
        label="Gmail",
        domains=("gmail.com", "googlemail.com"),
        hint="Use an app password (Google Account → Security → 2-Step Verification → App "
        "passwords); IMAP is always on since January 2025.",
        notes=(
            "Google documents the daily IMAP limits for Google Workspace; for consumer "
            "Gmail it publishes none, so the Workspace figures are used as the best known.",
            "Gmail folders are labels: a message with two labels is in two folders.",
        ),
        sources={**_GMAIL_SOURCES, "domains": (_ispdb("googlemail.com.xml"),)},
        **_GMAIL_COMMON,  # type: ignore[arg-type]
    ),
    Provider(
        key="google-workspace",
        label="Google Workspace",
        business=True,
        hint="Use an app password if your administrator allows them, and IMAP must be "
        "allowed for your organisation.",
        notes=("Same IMAP servers as Gmail; found by host or --*-preset, not by domain.",),
        sources=_GMAIL_SOURCES,
        **_GMAIL_COMMON,  # type: ignore[arg-type]
    ),
    Provider(
        key="microsoft365",
        label="Microsoft 365",
        host="outlook.office365.com",
        domains=("onmicrosoft.com",),
        business=True,
        folders=Folders(
            sent="Sent Items",
            drafts="Drafts",
            trash="Deleted Items",
            junk="Junk Email",
            archive="Archive",
        ),
        max_message_size=150 * MiB,
        oauth_only=True,
        oauth_provider="microsoft",
        hint="Microsoft 365 accepts only OAuth2 (modern authentication) for IMAP; password "
        "sign-in works only where an administrator still allows it.",
        notes=(
            "150 MB is the largest limit an administrator can set; the default mailbox "
            "limit is 36 MB for receiving (35 MB sending), and the server refuses larger "
            "messages, which are then reported with the server's words.",
            "Exchange Online throttles IMAP ('Request is throttled. Suggested Backoff Time') "
            "without published figures; imapsync quotes a third-party estimate of 300 MB per "
            "user per hour.",
            "A folder named 'Files' is reserved (imapsync FAQ).",
        ),
        sources={
            "server": (_ispdb("office365.com.xml"), IMAPSYNC_O365),
            "domains": (_ispdb("office365.com.xml"),),
            "folders": (MS_FOLDERS,),
            "max_message_size": (EXO_LIMITS, IMAPSYNC_O365),
            "auth": (EXO_BASIC_AUTH, IMAPSYNC_O365, MS_IMAP_OAUTH),
        },
    ),
    Provider(
        key="outlook",
        label="Outlook.com / Hotmail",
        host="outlook.office365.com",
        aliases=("imap-mail.outlook.com", "imap.outlook.com"),
        domains=_OUTLOOK_DOMAINS,
        oauth_only=True,
        oauth_provider="microsoft",
        hint="Outlook.com accepts only OAuth2 (modern authentication) for IMAP since "
        "September 2024; app passwords no longer work for it.",
        notes=(
            "No first-party figure for the largest message an Outlook.com mailbox takes was "
            "found (suped.com, third-party, gives 20-25 MB for sending); none is enforced.",
        ),
        sources={
            "server": (_ispdb("hotmail.com.xml"), OUTLOOK_SETTINGS, IMAPSYNC_O365),
            "domains": (_ispdb("hotmail.com.xml"),),
            "auth": (OUTLOOK_MODERN_AUTH, _ispdb("hotmail.com.xml"), MS_IMAP_OAUTH),
        },
    ),
    Provider(
        key="yahoo",
        label="Yahoo Mail",
        host="imap.mail.yahoo.com",
        aliases=("export.imap.mail.yahoo.com",),
        domains=(
            "yahoo.com",
            "yahoo.de",
            "yahoo.it",
            "yahoo.fr",
            "yahoo.es",
            "yahoo.se",
            "yahoo.co.in",
            "yahoo.co.uk",
            "yahoo.co.nz",
            "yahoo.com.au",
            "yahoo.com.ar",
            "yahoo.com.br",
            "yahoo.com.mx",
            "ymail.com",
            "myyahoo.com",
            "rocketmail.com",
        ),
        max_message_size=25 * MiB,
        app_password=True,
        hint="Yahoo needs an app password: Account Info → Account security → Generate app "
        "password.",
        notes=(
            "imap.mail.yahoo.com holds at most 10,000 messages per folder; "
            "export.imap.mail.yahoo.com allows 100,000 (imapsync FAQ).",
        ),
        sources={
            "server": (_ispdb("yahoo.com.xml"), YAHOO_SETTINGS),
            "domains": (_ispdb("yahoo.com.xml"),),
            "max_message_size": (IMAPSYNC_YAHOO,),
            "auth": (IMAPSYNC_YAHOO,),
        },
    ),
    Provider(
        key="aol",
        label="AOL Mail",
        host="imap.aol.com",
        aliases=("export.imap.aol.com",),
        domains=(
            "aol.com",
            "aim.com",
            "netscape.net",
            "netscape.com",
            "compuserve.com",
            "cs.com",
            "wmconnect.com",
            "aol.de",
            "aol.it",
            "aol.fr",
            "aol.es",
            "aol.se",
            "aol.co.uk",
            "aol.co.nz",
            "aol.com.au",
            "aol.com.ar",
            "aol.com.br",
            "aol.com.mx",
        ),
        max_message_size=25 * MiB,
        app_password=True,
        hint="AOL needs an app password: Account Security → Generate app password.",
        sources={
            "server": (_ispdb("aol.com.xml"), IMAPSYNC_AOL),
            "domains": (_ispdb("aol.com.xml"),),
            "max_message_size": (IMAPSYNC_AOL,),
            "auth": (IMAPSYNC_AOL,),
        },
    ),
    Provider(
        key="icloud",
        label="iCloud Mail",
        host="imap.mail.me.com",
        domains=("icloud.com", "me.com", "mac.com"),
        max_message_size=20 * MiB,
        app_password=True,
        hint="Use an app-specific password from appleid.apple.com; the username is your "
        "iCloud e-mail address.",
        sources={
            "server": (_ispdb("me.com.xml"), APPLE_SETTINGS),
            "domains": (_ispdb("me.com.xml"),),
            "max_message_size": (APPLE_LIMITS,),
            "auth": (APPLE_SETTINGS, _imapsync("FAQ.iCloud.txt", "Imapsync tips for iCloud")),
        },
    ),
    Provider(
        key="fastmail",
        label="Fastmail",
        host="imap.fastmail.com",
        domains=("fastmail.com", "fastmail.fm", "messagingengine.com"),
        app_password=True,
        hint="Create an app password with IMAP access under Settings → Privacy & Security.",
        notes=("Fastmail's Basic plan has no IMAP access.",),
        sources={
            "server": (_ispdb("messagingengine.com.xml"), FASTMAIL_SERVERS),
            "domains": (_ispdb("messagingengine.com.xml"), FASTMAIL_SERVERS),
            "auth": (FASTMAIL_APP_PASSWORDS,),
        },
    ),
    Provider(
        key="zoho",
        label="Zoho Mail",
        host="imap.zoho.com",
        aliases=(
            "imappro.zoho.com",
            "imap.zoho.eu",
            "imappro.zoho.eu",
            "imap.zoho.in",
            "imappro.zoho.in",
            "imap.zoho.com.au",
            "imappro.zoho.com.au",
        ),
        domains=("zoho.com", "zohomail.com"),
        max_message_size=40 * MiB,
        app_password=True,
        imap_must_be_enabled=True,
        hint="Turn on IMAP access in Zoho Mail's settings (Mail Accounts → IMAP); with "
        "two-factor authentication use an application-specific password.",
        notes=(
            "Organisation (custom-domain) accounts use imappro.zoho.com; other data centres "
            "use .eu, .in, .com.au hosts.",
            "Zoho may block IMAP for a while after 'unusual activity' (usage policy), "
            "without published figures.",
        ),
        sources={
            "server": (_ispdb("zoho.com.xml"), ZOHO_IMAP, ZOHO_REGIONS),
            "domains": (_ispdb("zoho.com.xml"),),
            "max_message_size": (ZOHO_SIZE,),
            "auth": (ZOHO_IMAP,),
        },
    ),
    Provider(
        key="gmx",
        label="GMX (gmx.net, gmx.de)",
        host="imap.gmx.net",
        domains=(
            "gmx.net",
            "gmx.de",
            "gmx.at",
            "gmx.ch",
            "gmx.eu",
            "gmx.biz",
            "gmx.org",
            "gmx.info",
        ),
        imap_must_be_enabled=True,
        hint="Allow POP3 & IMAP access once in the GMX e-mail settings.",
        sources={
            "server": (_ispdb("gmx.net.xml"),),
            "domains": (_ispdb("gmx.net.xml"),),
            "auth": (GMX_ENABLE, _ispdb("gmx.net.xml")),
        },
    ),
    Provider(
        key="gmx-com",
        label="GMX (gmx.com)",
        host="imap.gmx.com",
        domains=(
            "gmx.com",
            "gmx.us",
            "gmx.co.uk",
            "gmx.es",
            "gmx.fr",
            "gmx.ca",
            "gmx.it",
            "gmx.pt",
            "gmx.se",
            "gmx.ie",
        ),
        notes=("Same company as gmx.net, different IMAP servers (ISPDB).",),
        sources={
            "server": (_ispdb("gmx.com.xml"),),
            "domains": (_ispdb("gmx.com.xml"),),
        },
    ),
    Provider(
        key="webde",
        label="WEB.DE",
        host="imap.web.de",
        domains=("web.de",),
        username="localpart",
        imap_must_be_enabled=True,
        hint="Allow POP3 & IMAP access once in the WEB.DE e-mail settings; the username is "
        "the part of the address before the @.",
        sources={
            "server": (_ispdb("web.de.xml"),),
            "domains": (_ispdb("web.de.xml"),),
            "auth": (WEBDE_ENABLE, _ispdb("web.de.xml")),
        },
    ),
    Provider(
        key="mailcom",
        label="mail.com",
        host="imap.mail.com",
        domains=(
            "mail.com",
            "mail.org",
            "email.com",
            "post.com",
            "usa.com",
            "accountant.com",
            "consultant.com",
            "dr.com",
            "engineer.com",
            "cheerful.com",
            "techie.com",
            "linuxmail.org",
            "europe.com",
            "london.com",
            "uymail.com",
            "myself.com",
            "iname.com",
            "writeme.com",
        ),
        notes=("mail.com has about 500 more vanity domains (ISPDB); give a URL for those.",),
        sources={
            "server": (_ispdb("mail.com.xml"),),
            "domains": (_ispdb("mail.com.xml"),),
        },
    ),
    Provider(
        key="yandex",
        label="Yandex Mail",
        host="imap.yandex.com",
        aliases=("imap.yandex.ru",),
        domains=(
            "yandex.ru",
            "yandex.com",
            "yandex.net",
            "yandex.by",
            "yandex.kz",
            "yandex.ua",
            "ya.ru",
            "narod.ru",
        ),
        app_password=True,
        imap_must_be_enabled=True,
        hint="Enable IMAP in Yandex Mail's settings (Email clients) and sign in with an app "
        "password.",
        sources={
            "server": (_ispdb("yandex.ru.xml"), IMAPSYNC_YANDEX),
            "domains": (_ispdb("yandex.ru.xml"),),
            "auth": (YANDEX_APP_PASSWORDS, _ispdb("yandex.ru.xml")),
        },
    ),
)

#: Any other IMAP server: no known limits, so the mover's own defaults apply.
GENERIC = Provider(key="generic", label="IMAP server", host=None)

_BY_KEY: dict[str, Provider] = {p.key: p for p in (*PROVIDERS, GENERIC)}


def keys() -> list[str]:
    """Every preset key, "generic" last (for ``--source-preset`` choices)."""
    return list(_BY_KEY)


def by_key(key: str) -> Provider | None:
    """The preset called ``key`` ("gmail", "generic", ...), or ``None``."""
    return _BY_KEY.get(key.strip().lower())


def _norm_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().rstrip(".").lower()


def for_address(address: str) -> Provider | None:
    """The provider hosting the e-mail ``address`` by its domain, or ``None``."""
    if "@" not in address:
        return None
    domain = _domain(address)
    for p in PROVIDERS:
        if domain in p.domains:
            return p
    return None


def for_host(host: str, user: str | None = None) -> Provider | None:
    """The provider whose IMAP server is ``host`` (or one of its aliases), or ``None``.

    Several services share servers (Gmail and Google Workspace, Outlook.com and
    Microsoft 365).  Then ``user`` decides: its domain if a candidate hosts it, else the
    business service (a custom domain); without a user, the first in the table.
    """
    h = _norm_host(host)
    found = [p for p in PROVIDERS if p.host == h or h in p.aliases]
    if len(found) <= 1 or user is None:
        return found[0] if found else None
    if "@" in user:
        domain = _domain(user)
        for p in found:
            if domain in p.domains:
                return p
        return next((p for p in found if p.business), found[0])
    return found[0]


# ---------------------------------------------------------------------------- limits


def format_size(n: int) -> str:
    """``35651584`` -> "34 MB" (sizes from the sources are in units of 2**20)."""
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB:,} MB"
    if n >= MiB:
        return f"{n / MiB:,.1f} MB"
    return f"{n:,} bytes"


def _name(p: Provider) -> str:
    return p.label if not p.generic else "the server"


@dataclass(frozen=True)
class Limits:
    """What two providers' presets ask of a transfer between them, as plain values.

    Policy says *what* the limits are; the transfer side applies them to its options
    (:func:`yippiemove.transfer.run.apply_limits`), so policy never imports transfer types.
    """

    #: The smaller per-account connection cap of the two sides (each worker holds one
    #: connection per side), or ``None``: no cap known.
    max_connections: int | None = None
    #: Who sets that cap, for the note: e.g. "Gmail (the destination)".
    connections_set_by: str = ""
    #: The destination's largest message (bytes; the source's does not matter), or ``None``.
    max_message_size: int | None = None
    #: How that limit is named in a failure reason, e.g. "Gmail's 34 MB limit".
    max_message_size_label: str = ""
    #: Said when the size limit is applied.
    max_message_size_note: str = ""
    #: A password given to an OAuth2-only provider, said out loud.
    sign_in_notes: tuple[str, ...] = ()

    def connections_note(self, asked: int) -> str:
        """Why ``asked`` workers became :attr:`max_connections`."""
        return (
            f"connections lowered from {asked} to {self.max_connections}: "
            f"{self.connections_set_by} allows {self.max_connections} simultaneous IMAP "
            "connections per account, and each worker holds one"
        )


def limits(
    source: Provider, dest: Provider, *, oauth_source: bool = False, oauth_dest: bool = False
) -> Limits:
    """The limits of a transfer from ``source`` to ``dest``:

    * connections: every folder worker holds one connection per side, so the number of
      workers is capped by the smaller per-account connection limit of the two sides;
    * the destination's largest message: larger ones are reported as failed up front and
      never fetched (the engine treats ``Options.max_message_size`` like APPENDLIMIT);
    * an OAuth2-only provider signed in to with a password (``oauth_source`` /
      ``oauth_dest`` False) is said out loud.
    """
    caps = [
        (p.max_connections, p, side)
        for p, side in ((source, "source"), (dest, "destination"))
        if p.max_connections is not None
    ]
    cap: int | None = None
    set_by = ""
    if caps:
        cap, p, side = min(caps, key=lambda t: t[0] or 0)
        set_by = f"{p.label} (the {side})"
    size = dest.max_message_size
    size_label = size_note = ""
    if size is not None:
        size_label = f"{_name(dest)}'s {format_size(size)} limit"
        size_note = (
            f"messages larger than {format_size(size)} ({_name(dest)}'s limit) are reported "
            "as failed and not copied"
        )
    sign_in = tuple(
        f"{p.label} (the {side}) accepts only OAuth2 sign-in for IMAP: a password is "
        f"likely refused (sign in with OAuth2: --{opt}-oauth {p.oauth_provider or 'auto'}, "
        "or 'Sign in' on the order form)"
        for p, side, opt in ((source, "source", "source"), (dest, "destination", "dest"))
        if p.oauth_only and not (oauth_source if side == "source" else oauth_dest)
    )
    return Limits(
        max_connections=cap,
        connections_set_by=set_by,
        max_message_size=size,
        max_message_size_label=size_label,
        max_message_size_note=size_note,
        sign_in_notes=sign_in,
    )


def bandwidth_warnings(total_bytes: int, source: Provider, dest: Provider) -> list[str]:
    """Warnings when a transfer of ``total_bytes`` exceeds a daily IMAP transfer cap.

    The mover does not throttle itself for these caps (yet); the provider does, by
    slowing down or locking IMAP for a day, and a re-run resumes where it stopped.
    """
    out: list[str] = []
    for p, cap, what in (
        (source, source.download_per_day, "download from"),
        (dest, dest.upload_per_day, "upload to"),
    ):
        if cap is not None and total_bytes > cap:
            src = p.sources.get("bandwidth", ())
            where = f" (source: {src[0].title.split(' (')[0]}, {src[0].url})" if src else ""
            days = -(-total_bytes // cap)
            out.append(
                f"warning: this transfer is {format_size(total_bytes)}, but {p.label} lets "
                f"IMAP {what} an account only {format_size(cap)} per day{where}; expect it "
                f"to slow down or lock IMAP for a day, so plan for about {days} days "
                "(re-run the same command to resume)"
            )
    return out
