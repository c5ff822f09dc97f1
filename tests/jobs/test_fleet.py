"""Issue 15: worker hosts in network namespaces sharing a Redis queue and a PostgreSQL
control database (tests/fleet.py, tests/fleet_fixtures.py), moving mail from a real
Dovecot reached across their links.  Every test ends with each destination exact
against its source (messages, flags, INTERNALDATE; tests/mailcheck.py) and the source
untouched (the guard of the Dovecot fixture).
"""

from __future__ import annotations

import pytest

from tests.fleet_fixtures import FleetRun, fleet, fleet_run

__all__ = ["fleet", "fleet_run"]

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(180)]


def test_two_hosts_share_the_queue(fleet_run: FleetRun) -> None:
    """6 jobs, two worker hosts of 2 workers each: both hosts run some, all exact."""
    run = fleet_run
    w1, w2 = run.hosts[0], run.hosts[1]
    pairs = [run.pair(i, count=40) for i in range(6)]
    run.start_worker(w1)
    run.start_worker(w2)
    ids = [run.submit(src, dst) for src, dst in pairs]
    run.assert_done(run.wait(ids))
    ran = {j: run.host_of(j) for j in ids}
    hosts = set().union(*ran.values())
    assert {"w1", "w2"} <= hosts, f"not both hosts ran jobs: {ran}\n{run.fleet.worker_logs()}"
    for src, dst in pairs:
        run.exact(src, dst)
