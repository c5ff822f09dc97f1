"""yippiemove: exact, resumable, fast IMAP-to-IMAP mailbox transfers."""

__version__ = "0.1.0"
