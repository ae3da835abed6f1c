"""The page runs with the ``.[ui]`` extra alone: no TensorFlow, no service or trainer code."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Runs the page once in a fresh interpreter in which the heavy packages cannot be imported.
PROBE = textwrap.dedent(
    """
    import importlib.abc
    import sys

    FORBIDDEN = {"tensorflow", "keras", "ai_edge_litert", "tflite_runtime", "service",
                 "trainer", "fastapi", "uvicorn"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in FORBIDDEN:
                raise ImportError(f"the page must not import {name}")
            return None

    sys.meta_path.insert(0, Block())

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(sys.argv[1], default_timeout=60)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value == "Bone fracture X-ray classifier"
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
    assert not loaded, loaded
    print("page ran without", ", ".join(sorted(FORBIDDEN)))
    """
)


def test_page_runs_without_tensorflow_service_or_trainer(dead_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "ui" / "app.py")],
        cwd=REPO,
        env={"BONEFRAC_API_URL": dead_url, "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "page ran without" in result.stdout
