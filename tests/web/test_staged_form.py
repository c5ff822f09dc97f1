"""The order form's "keep in sync until I switch" fields (web/staged.py): the interval
choices from the service's minimum, the times read in the customer's time zone."""

from __future__ import annotations

import datetime as dt

import pytest

from yippiemove.web.staged import ScheduleFormError, interval_choices, schedule_from_form


def test_interval_choices_start_at_the_services_minimum() -> None:
    hours = interval_choices(3600)
    assert [c["seconds"] for c in hours] == [3600, 7200, 14400, 21600, 43200, 86400]
    assert [c["label"] for c in hours][:2] == ["every hour", "every 2 hours"]
    assert [c["seconds"] for c in hours if c["default"]] == [21600]
    assert interval_choices(4 * 3600)[0]["seconds"] == 14400
    fast = interval_choices(4)  # a test service: its minimum first
    assert fast[0] == {"seconds": 4.0, "label": "every 4 seconds", "default": False}
    assert [c["seconds"] for c in interval_choices(90 * 60)][:2] == [5400, 7200]


def test_no_box_ticked_is_one_pass() -> None:
    assert schedule_from_form({"staged_interval": "3600"}) is None


def test_times_are_read_in_the_browsers_time_zone() -> None:
    form = {
        "staged": "1",
        "staged_interval": "7200",
        "timezone": "Europe/Paris",
        "staged_start": "2031-06-01T08:00",
        "staged_final_mode": "time",
        "staged_final": "2031-06-03T18:30",
    }
    got = schedule_from_form(form)
    paris = dt.timezone(dt.timedelta(hours=2))  # summer time
    assert got == {
        "interval": 7200.0,
        "start_at": dt.datetime(2031, 6, 1, 8, 0, tzinfo=paris).timestamp(),
        "final_at": dt.datetime(2031, 6, 3, 18, 30, tzinfo=paris).timestamp(),
    }
    # The final time counts only when "at a time" is chosen; no zone: UTC.
    button = schedule_from_form({**form, "staged_final_mode": "button", "timezone": ""})
    assert button is not None and button["final_at"] is None
    assert button["start_at"] == dt.datetime(2031, 6, 1, 8, 0, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("staged_start", "tomorrow", "First pass"), ("staged_interval", "often", "how often")],
)
def test_an_unreadable_field_is_named(field: str, value: str, message: str) -> None:
    form = {"staged": "1", "staged_interval": "3600", field: value}
    with pytest.raises(ScheduleFormError, match=message):
        schedule_from_form(form)
