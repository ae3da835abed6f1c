"""The real thing: ``python -m service`` under uvicorn on a loopback port."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest


@pytest.mark.e2e
def test_uvicorn_process_serves_a_radiograph(running_service: tuple[str, Path], radiograph):
    base, log = running_service
    assert httpx.get(f"{base}/readyz").status_code == 200

    response = httpx.post(
        f"{base}/predict", files={"file": ("radiograph.jpg", radiograph, "image/jpeg")}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "bone-fracture"
    assert len(body["probabilities"]) == 10
    assert abs(sum(p["probability"] for p in body["probabilities"]) - 1) < 1e-9

    refused = httpx.post(f"{base}/predict", files={"file": ("a.txt", b"text", "text/plain")})
    assert refused.status_code == 415
    metrics = httpx.get(f"{base}/metrics").text
    assert 'route="/predict",status="200"' in metrics
    assert "serving version 1 of bone-fracture" in log.read_text()
