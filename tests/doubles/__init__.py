"""Test doubles that only the tests and bench/ use: the Gmail IMAP double (``gmail.py``) and
the Cyrus IMAP launcher (``cyrus.py``). Dovecot's launcher stays in ``yippiemove.testing``
because ``yippiemove demo`` runs it (docs/design.md)."""
