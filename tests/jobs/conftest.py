"""Fixtures shared by the service and job tests (see tests/svckit.py)."""

from tests.svckit import make_service, smtp_sink

__all__ = ["make_service", "smtp_sink"]
