"""A stand-in web app for tests of ``yippiemove serve`` (independent of yippiemove.web)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from yippiemove.service.core import Service


def create_app(service: Service) -> Any:
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "data_dir": str(service.settings.data_dir)}

    return app
