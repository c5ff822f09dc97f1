"""The egress policy (policy/egress.py): which resolved addresses the service refuses."""

from __future__ import annotations

import ipaddress

import pytest

from yippiemove.policy.egress import EgressPolicy, classify, parse_networks

REFUSED = [
    "127.0.0.1",
    "127.255.0.9",
    "0.0.0.0",
    "0.1.2.3",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "224.0.0.1",
    "255.255.255.255",
    "240.0.0.1",
    "::",
    "::1",
    "fe80::1",
    "fd00::1",
    "fc00::5",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::1",
]
PUBLIC = ["1.1.1.1", "93.184.216.34", "2606:4700::1111", "::ffff:1.1.1.1", "64:ff9b::101:101"]


@pytest.mark.parametrize("addr", REFUSED)
def test_not_public_addresses_are_refused_by_default(addr: str) -> None:
    assert classify(ipaddress.ip_address(addr)) is not None
    assert EgressPolicy().refusal(addr) is not None


@pytest.mark.parametrize("addr", PUBLIC)
def test_public_addresses_pass(addr: str) -> None:
    assert EgressPolicy().refusal(addr) is None


def test_allow_deny_and_own() -> None:
    p = EgressPolicy.from_settings("127.0.0.0/8, fd00::/8", "127.0.0.9/32,1.1.1.0/24")
    assert p.refusal("127.0.0.1") is None
    assert p.refusal("::ffff:127.0.0.1") is None  # the same address, spelt as IPv6
    assert p.refusal("fd00::1") is None
    assert p.refusal("::1") is not None  # not in the list: still loopback
    assert p.refusal("127.0.0.9") == "a network the operator denied"  # deny wins
    assert p.refusal("1.1.1.1") == "a network the operator denied"
    own = EgressPolicy.from_settings(own=["93.184.216.80", "2606:4700::80"])
    assert own.refusal("93.184.216.80") == "this service's own address"
    assert EgressPolicy(open=True).refusal("127.0.0.1") is None
    assert "allow 127.0.0.0/8,fd00::/8" in p.describe()


def test_bad_networks_are_named() -> None:
    with pytest.raises(ValueError, match="'nonsense'"):
        parse_networks("10.0.0.0/8, nonsense", "egress allow")
    assert parse_networks(["10.0.0.1", "[::1]"]) == (
        ipaddress.ip_network("10.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )
