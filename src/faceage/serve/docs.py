"""``/docs`` (Swagger UI) and ``/redoc`` that work without network.

FastAPI's own pages load Swagger UI and ReDoc from a CDN: offline, ``/docs`` is a blank page.
Here the pages load the copies that the ``fastapi-offline`` package ships, served by the app
under :data:`ASSETS_URL`. The app must be made with ``docs_url=None, redoc_url=None``.
"""
from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"  # swagger-ui-bundle.js, redoc.standalone.js...
ASSETS_URL = "/static-offline-docs"


def add_offline_docs(app: FastAPI) -> None:
    """Mount the Swagger UI and ReDoc files and add ``GET /docs`` and ``GET /redoc`` pages that use them."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="static-offline-docs")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API docs",
                                   swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS_URL}/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} - API reference",
                              redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
                              redoc_favicon_url=f"{ASSETS_URL}/favicon.png", with_google_fonts=False)
