"""The customer's job list at N transfers (issue 18): answer size and time of
``GET /api/v1/transfers`` over the real Service (SQLite), jobs made straight in the
control database with a running job's progress (a 100-point rate history, 3 folders).

    python bench/job_list.py [N]

Runs against whichever yippiemove is importable (PYTHONPATH=OLD/src for the old code).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from fastapi.testclient import TestClient

from yippiemove.service.config import Settings
from yippiemove.service.core import Service
from yippiemove.service.db import Job
from yippiemove.web.app import create_app

ACCOUNT = {"host": "127.0.0.1", "port": 143, "security": "starttls", "username": "someone"}


def progress() -> dict[str, object]:
    return {
        "phase": "copying",
        "folders_done": 1,
        "folders_total": 3,
        "messages_done": 70,
        "messages_total": 150,
        "bytes_done": 250_000,
        "bytes_total": 550_000,
        "rate": 120_000.0,
        "rate_history": [[1_800_000_000.0 + i, i * 2500] for i in range(100)],
        "per_folder": {
            name: {
                "dest": name,
                "messages": 50,
                "bytes": 180_000,
                "messages_done": 20,
                "bytes_done": 80_000,
                "failed": 0,
                "state": "copying",
            }
            for name in ("INBOX", "Sent", "Archive/2024")
        },
    }


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        svc = Service(Settings.load(Path(tmp) / "data", maintenance_interval=3600.0))
        try:
            uid = svc.create_user("bench@example.org", "bench password")
            h = {"Authorization": f"Bearer {svc.create_token(uid, 'bench')}"}
            with svc.db.session() as s:
                for i in range(n):
                    s.add(
                        Job(
                            id=uuid.uuid4().hex,
                            user_id=uid,
                            status="running",
                            source=ACCOUNT,
                            dest=ACCOUNT,
                            created=1_800_000_000.0 + i,
                            progress=progress(),
                        )
                    )
            with TestClient(create_app(svc)) as c:
                for query in ("", "?view=full", "?limit=200"):
                    times, size = [], 0
                    for _ in range(20):
                        t = time.perf_counter()
                        r = c.get(f"/api/v1/transfers{query}", headers=h)
                        times.append(time.perf_counter() - t)
                        size = len(r.content)
                    print(
                        f"{n} jobs GET /api/v1/transfers{query}: {len(r.json()['transfers'])} "
                        f"transfers, {size / 1024:.1f} KiB, median "
                        f"{statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms"
                    )
        finally:
            svc.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
