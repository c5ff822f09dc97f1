"""The service's account check with a destination refuses the source under another name
(issue 12): a ServiceError (HTTP 400 from the web app's handler) before anything is
written, and the source is opened read-only."""

from __future__ import annotations

import asyncio

import pytest

from tests import mailcheck
from tests.transfer.test_move import populate
from yippiemove.service.core import Account, ServiceError


@pytest.mark.parametrize("how", ["localhost", "tls-port"])
def test_check_account_refuses_the_same_mailbox(make_service, dovecot, how):
    populate(dovecot)
    before = mailcheck.snapshot(dovecot.port, "src", "srcpass")
    svc = make_service(ca_file=str(dovecot.ca_file))
    src = Account("127.0.0.1", dovecot.port, "starttls", "src", "srcpass")
    dst = {
        "localhost": Account("localhost", dovecot.port, "starttls", "src", "srcpass"),
        "tls-port": Account("127.0.0.1", dovecot.tls_port, "tls", "src", "srcpass"),
    }[how]
    with pytest.raises(ServiceError) as info:
        asyncio.run(svc.check_account(src, dest=dst))
    msg = str(info.value)
    assert msg.startswith("dest: the source and the destination are the same mailbox ("), msg
    assert getattr(info.value, "status", 400) in (None, 400)
    assert mailcheck.snapshot(dovecot.port, "src", "srcpass") == before
    # Another account on the same server is fine.
    other = Account("127.0.0.1", dovecot.tls_port, "tls", "dst", "dstpass")
    assert asyncio.run(svc.check_account(src, dest=other))


def test_an_order_into_the_source_under_another_name_is_refused(make_service, dovecot):
    """The REST API, the web's last step and the batch CSV all build their job spec with
    Service.make_spec: an alias of the source is refused there, before a job exists."""
    svc = make_service(ca_file=str(dovecot.ca_file))
    uid = svc.create_user("owner@example.org", "long enough pass")
    src = Account("127.0.0.1", dovecot.port, "starttls", "src", "srcpass")
    alias = Account("localhost", dovecot.port, "starttls", "SRC", "srcpass")
    with pytest.raises(ServiceError) as info:
        svc.create_transfer(uid, src, alias)
    assert str(info.value).startswith("dest: is the same mailbox as the source ("), info.value
    assert svc.list_transfers(uid) == []
    other = Account("localhost", dovecot.port, "starttls", "dst", "dstpass")
    assert svc.create_transfer(uid, src, other).status == "queued"
