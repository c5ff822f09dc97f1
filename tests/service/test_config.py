"""Where the service keeps its data by default (issue 14, least privilege)."""

from __future__ import annotations

from pathlib import Path

from yippiemove.service.config import default_data_dir


def test_a_service_run_as_root_keeps_its_data_where_jobs_can_reach_it() -> None:
    # Under /root (0700) job processes with their own user ids could not reach their
    # job directories, so jobs would keep root's rights (jobs/privilege.py).
    assert default_data_dir(euid=0) == Path("/var/lib/yippiemove")


def test_another_user_keeps_it_in_their_own_data_directory() -> None:
    d = default_data_dir(euid=1000)
    assert d.name == "yippiemove" and d != Path("/var/lib/yippiemove")
