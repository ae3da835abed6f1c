"""``/docs`` and ``/redoc`` that work without internet.

FastAPI's pages load Swagger UI and ReDoc from a CDN (and ReDoc its fonts from Google),
so on a machine without internet they were blank. The scripts come instead from the
``fastapi-offline`` package (MIT; Swagger UI and ReDoc's standalone bundle, no other
dependency than FastAPI) and are served by this app under ``/docs-static``. Without that
package the pages fall back to FastAPI's CDN ones, with a warning in the log.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

log = logging.getLogger("service.docs")

STATIC_URL = "/docs-static"


def offline_assets() -> Path | None:
    """The folder of fastapi-offline's bundled scripts, when the package is installed."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def install_docs(app: FastAPI) -> bool:
    """Add /docs and /redoc to an app created with ``docs_url=None, redoc_url=None``.

    True when they are served from local files; False when fastapi-offline is missing
    and they load from FastAPI's CDN defaults.
    """
    assets = offline_assets()
    openapi_url = app.openapi_url or "/openapi.json"
    title = app.title
    swagger: dict[str, Any] = {}
    redoc: dict[str, str] = {}
    if assets is None:
        log.warning("fastapi-offline is not installed: /docs and /redoc load from a CDN")
    else:
        app.mount(STATIC_URL, StaticFiles(directory=assets), name="docs-static")
        favicon = f"{STATIC_URL}/favicon.png"
        swagger = {
            "swagger_js_url": f"{STATIC_URL}/swagger-ui-bundle.js",
            "swagger_css_url": f"{STATIC_URL}/swagger-ui.css",
            "swagger_favicon_url": favicon,
        }
        redoc = {"redoc_js_url": f"{STATIC_URL}/redoc.standalone.js", "redoc_favicon_url": favicon}

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{title} - Swagger UI", **swagger
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc_page() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - ReDoc",
            with_google_fonts=assets is None,
            **redoc,
        )

    return assets is not None
