"""The REST API's description as a page (``/docs``) and its one error shape.

FastAPI's own ``/docs`` and ``/redoc`` load Swagger UI / ReDoc from a CDN and start them
with an inline script: the service's CSP (web/security.py) allows neither.  So the page
is ours: Swagger UI's files come from a package that bundles them (``fastapi-offline``,
served at ``/docs/assets``), and the script that starts it is one of our static files
(``static/docs.js``).  Nothing loads from elsewhere and the CSP stays as it is.

The OpenAPI document says what the API answers: FastAPI documents its own 422 shape
(``{"detail": [...]}``) for every route with parameters, but the app answers every error,
422 included, as ``ErrorOut`` (``{"code", "message", ...}``): ``one_error_shape`` puts
that in the document, and a 400 (malformed JSON) and a 413 (body too large) on every
route that takes a body.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["DOCS_PAGE", "add_docs", "one_error_shape"]

#: Swagger UI's files, bundled by a package (its version pins theirs).
SWAGGER_ASSETS = str(files("fastapi_offline") / "static")

DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>yippiemove REST API</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="/openapi.json"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/static/docs.js"></script>
</body>
</html>
"""

_ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}
_FASTAPIS = "#/components/schemas/HTTPValidationError"


def add_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI over ``/openapi.json``, every file served from here."""
    app.mount("/docs/assets", StaticFiles(directory=SWAGGER_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(DOCS_PAGE)


def _fix(schema: dict[str, Any]) -> dict[str, Any]:
    for path in schema.get("paths", {}).values():
        for op in path.values():
            responses = op.get("responses", {})
            if "requestBody" in op:
                responses.setdefault("400", {"description": "Malformed JSON"})
                responses.setdefault("413", {"description": "The request body is too large"})
            for status, response in responses.items():
                if not status.startswith(("4", "5")):
                    continue
                content = response.get("content", {}).get("application/json", {})
                if content.get("schema", {}).get("$ref") in (None, _FASTAPIS):  # its 422
                    response["content"] = {"application/json": {"schema": dict(_ERROR_REF)}}
    components = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def one_error_shape(app: FastAPI) -> None:
    """Every documented 4xx/5xx is ``ErrorOut``, as the app answers (see above)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _fix(original())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
