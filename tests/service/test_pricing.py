"""Prices and quotes (service/pricing.py): pure functions, from the operator's text."""

from __future__ import annotations

import pytest

from yippiemove.service.pricing import (
    Band,
    Bundle,
    PriceError,
    Prices,
    parse_bands,
    parse_bundles,
    parse_size,
    quote,
)

BANDS = parse_bands("1GB:900, 10GB:1500, *:2500")


def test_sizes_as_providers_count_them():
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("1.5 gb") == 1_500_000_000
    assert parse_size("2048") == 2048
    for bad in ("", "MB", "-1GB", "0", "1 PB", "1e9"):
        with pytest.raises(PriceError, match="size"):
            parse_size(bad)


def test_bands_parse_in_order_and_bad_ones_are_named():
    assert BANDS == (Band(10**9, 900), Band(10 * 10**9, 1500), Band(None, 2500))
    cases = {
        "1GB": "not SIZE:AMOUNT",
        "1GB:9.50": "not an amount",
        "10GB:900,1GB:1500": "not bigger than the band before",
        "*:900,1GB:1500": "after the band for any size",
        "": "none given",
        "1GB:99999999999": "more than",
    }
    for text, why in cases.items():
        with pytest.raises(PriceError, match=why) as e:
            parse_bands(text)
        assert "price bands" in str(e.value)


def test_bundles_are_credit_for_a_price_not_above_it():
    b = parse_bundles("60000:45000, 15000:12000")
    assert b == (Bundle(15000, 12000), Bundle(60000, 45000))
    assert [x.discount_percent for x in b] == [20, 25]
    for bad in ("15000", "12000:15000", "0:0", "x:1"):
        with pytest.raises(PriceError, match="bundles"):
            parse_bundles(bad)


def test_a_mailbox_takes_the_first_band_it_fits():
    p = Prices(bands=BANDS)
    assert quote(p, mailbox_bytes=10**9, messages=5).price == 900
    assert quote(p, mailbox_bytes=10**9 + 1, messages=5).price == 1500
    q = quote(p, mailbox_bytes=50 * 10**9, messages=120_000)
    assert (q.price, q.to_pay, q.credits_used) == (2500, 2500, 0)
    assert q.lines == (("120,000 messages, 50 GB: mailbox any size", 2500),)


def test_without_a_band_for_any_size_a_big_mailbox_is_refused_by_name():
    p = Prices(bands=parse_bands("1GB:900"))
    with pytest.raises(PriceError, match=r"no price for a mailbox of 2 GB.*up to 1 GB"):
        quote(p, mailbox_bytes=2 * 10**9, messages=1)


def test_credit_is_spent_first_and_the_rest_is_paid():
    p = Prices(bands=BANDS)
    q = quote(p, mailbox_bytes=2 * 10**9, messages=10, balance=600)
    assert (q.price, q.credits_used, q.to_pay) == (1500, 600, 900)
    assert q.lines[-1] == ("paid from your credit", -600)
    assert sum(amount for _, amount in q.lines) == q.to_pay
    q = quote(p, mailbox_bytes=2 * 10**9, messages=10, balance=10_000)
    assert (q.credits_used, q.to_pay) == (1500, 0)


def test_small_mailboxes_and_recent_reruns_are_free():
    p = Prices(bands=BANDS, free_bytes=50 * 10**6, free_rerun_days=30)
    q = quote(p, mailbox_bytes=50 * 10**6, messages=400, balance=700)
    assert (q.price, q.credits_used, q.to_pay) == (0, 0, 0)
    assert "free up to 50 MB" in q.lines[0][0]
    q = quote(p, mailbox_bytes=5 * 10**9, messages=1, paid_within_days=3)
    assert (q.price, q.to_pay) == (0, 0) and "re-run" in q.lines[0][0]
    assert quote(p, mailbox_bytes=5 * 10**9, messages=1, paid_within_days=31).price == 1500


def test_impossible_inputs_are_refused_by_name():
    p = Prices(bands=BANDS)
    with pytest.raises(ValueError, match="negative size: -1 bytes"):
        quote(p, mailbox_bytes=-1, messages=0)
    with pytest.raises(ValueError, match="balance is never negative here: -5"):
        quote(p, mailbox_bytes=1, messages=1, balance=-5)


def test_prices_come_from_settings_and_a_bad_one_stops_the_start_by_name(tmp_path, monkeypatch):
    from yippiemove.service.config import Settings

    for k in list(__import__("os").environ):
        if k.startswith("YIPPIEMOVE_"):
            monkeypatch.delenv(k)
    s = Settings.load(tmp_path / "a")
    assert s.billing_enabled is False  # off unless the operator turns it on
    assert s.prices() == Prices(bands=(Band(None, 1000),))
    monkeypatch.setenv("YIPPIEMOVE_PRICE_BANDS", "1GB:900,*:1500")
    monkeypatch.setenv("YIPPIEMOVE_PRICE_BUNDLES", "15000:12000")
    monkeypatch.setenv("YIPPIEMOVE_FREE_MAILBOX_SIZE", "50MB")
    monkeypatch.setenv("YIPPIEMOVE_BILLING_CURRENCY", "EUR")
    p = Settings.load(tmp_path / "b").prices()
    assert p == Prices(
        "eur", parse_bands("1GB:900,*:1500"), 50 * 10**6, 30, (Bundle(15000, 12000),)
    )
    bad = {
        "YIPPIEMOVE_PRICE_BANDS": ("10GB:900,1GB:5", "YIPPIEMOVE_PRICE_BANDS='10GB:900,1GB:5'"),
        "YIPPIEMOVE_FREE_MAILBOX_SIZE": ("lots", "YIPPIEMOVE_FREE_MAILBOX_SIZE='lots'"),
        "YIPPIEMOVE_BILLING_CURRENCY": ("dollars", "YIPPIEMOVE_BILLING_CURRENCY='dollars'"),
        "YIPPIEMOVE_PRICE_BUNDLES": ("5:9", "YIPPIEMOVE_PRICE_BUNDLES='5:9'"),
    }
    for i, (var, (value, named)) in enumerate(bad.items()):
        with monkeypatch.context() as m:
            m.setenv(var, value)
            with pytest.raises(ValueError) as e:
                Settings.load(tmp_path / f"c{i}")
            assert named in str(e.value)
