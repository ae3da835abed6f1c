"""The interactive API docs load everything from the service itself (no CDN)."""

from __future__ import annotations

import re

import pytest


@pytest.mark.parametrize(
    ("page", "script"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")]
)
def test_docs_pages_load_their_scripts_from_the_service(client, page, script):
    html = client.get(page).text

    external = re.findall(r"""(?:src|href)=["']?(https?:)?//""", html)
    assert not external, html
    assert "fonts.googleapis" not in html
    assert f"/docs-static/{script}" in html
    asset = client.get(f"/docs-static/{script}")
    assert asset.status_code == 200
    assert len(asset.content) > 100_000
