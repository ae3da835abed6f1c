"""The real thing: ``python -m service`` under uvicorn on a loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.e2e
def test_uvicorn_process_serves_a_radiograph(tiny_models_dir, radiograph, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "BONEFRAC_MODELS_DIR": str(tiny_models_dir),
        "BONEFRAC_RELOAD_INTERVAL_S": "0",
    }
    log = tmp_path / "service.log"
    base = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        started = time.monotonic()
        ready = None
        while time.monotonic() - started < 60 and process.poll() is None:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=1)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert ready is not None, log.read_text()
        assert ready.status_code == 200, log.read_text()

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
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert "serving version 1 of bone-fracture" in log.read_text()
