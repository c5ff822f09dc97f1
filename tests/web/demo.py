"""The web front door over the FakeService, for looking at the pages and for browser tests.

    .venv/bin/python -m tests.web.demo --port 8765     # then open http://127.0.0.1:8765
    log in as demo@example.org / demo-password-1

Jobs run by themselves (``--job-seconds``).  Nothing touches a mail server.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import uvicorn

from tests.web.fakes import FakeService, Settings
from yippiemove.web.app import create_app

DEMO_EMAIL = "demo@example.org"
DEMO_PASSWORD = "demo-password-1"


def seeded_service(data_dir: Path, job_seconds: float = 40.0) -> FakeService:
    from tests.web.fakes import Account

    fake = FakeService(Settings.load(data_dir), job_seconds=job_seconds)
    uid = fake.create_user(DEMO_EMAIL, DEMO_PASSWORD)
    src = Account("imap.gmail.com", 993, "tls", "ada@gmail.com", "x")
    dst = Account("imap.fastmail.com", 993, "tls", "ada@fastmail.com", "y")
    old = fake.create_transfer(uid, src, dst, None)
    fake.jobs[old.id].created -= 86400
    fake.finish(old.id)
    fake.jobs[old.id].started = fake.jobs[old.id].created + 5
    fake.jobs[old.id].finished = fake.jobs[old.id].created + 1300
    failed = fake.create_transfer(
        uid,
        Account("mail.example.net", 993, "tls", "grace@example.net", "x"),
        dst,
        {"include": [], "exclude": ["Spam", "Trash"]},
    )
    fake.jobs[failed.id].created -= 3600
    fake.advance(failed.id, 0.42)
    fake.add_failure(
        failed.id, "INBOX", 812, "[LIMIT] Message too large for the destination (52 MB)"
    )
    fake.fail(
        failed.id,
        "connection to mail.example.net:993 lost 3 times in a row: Connection reset by peer",
    )
    return fake


def serve(port: int, data_dir: Path, job_seconds: float) -> None:
    fake = seeded_service(data_dir, job_seconds)
    app = create_app(fake, settings=fake.settings)  # type: ignore[arg-type]
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class BackgroundServer:
    """uvicorn in a thread (for browser tests): ``with BackgroundServer(app) as url: ...``"""

    def __init__(self, app: object, port: int) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")  # type: ignore[arg-type]
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the web server did not start")
            time.sleep(0.05)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--job-seconds", type=float, default=40.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        serve(args.port, Path(tmp), args.job_seconds)


if __name__ == "__main__":
    main()
