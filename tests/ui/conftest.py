"""Fixtures for the page's tests: a real inference service on loopback, and sample X-rays.

The service is the real one (``python -m service``) serving the session's tiny model, so
the page is tested against the HTTP contract it will meet in production, not a mock.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.loopback import free_port, stop, wait_until_ok

REPO = Path(__file__).resolve().parents[2]

Reply = tuple[int, str, bytes]  # status, content type, body


@pytest.fixture(scope="session")
def service_url(running_service: tuple[str, Path]) -> str:
    """Base URL of the session's real service (see tests/conftest.py)."""
    return running_service[0]


@pytest.fixture(scope="session")
def page_url(service_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``streamlit run ui/app.py`` on a free port, talking to the test service."""
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit-log") / "streamlit.log"
    env = {**os.environ, "BONEFRAC_API_URL": service_url}
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(REPO / "ui" / "app.py"),
        "--server.headless=true",
        "--server.address=127.0.0.1",
        f"--server.port={port}",
        "--browser.gatherUsageStats=false",
        "--client.toolbarMode=minimal",
    ]
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(f"{url}/_stcore/health", proc, log, 60)
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def xray_bytes(radiograph_file: Path) -> tuple[str, bytes]:
    """The session's radiograph (real when present, else a stand-in) as (name, bytes)."""
    return radiograph_file.name, radiograph_file.read_bytes()


@pytest.fixture
def dead_url() -> str:
    """A loopback URL where nothing listens: the service is down."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[str], Reply]], str]]:
    """Start loopback servers whose answers come from a function of the request path.

    For the failure shapes a real service rarely gives on demand: a hang, HTML from a
    proxy, a 5xx without JSON.
    """
    servers: list[ThreadingHTTPServer] = []

    def start(reply: Callable[[str], Reply]) -> str:
        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                status, content_type, body = reply(self.path)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                # the client under test may have given up first (the timeout tests)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
