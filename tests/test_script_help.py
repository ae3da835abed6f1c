"""Every script under experiments/ and benchmarks/ still starts: ``--help`` in a fresh
interpreter exits 0 and prints its usage.

They are not part of the product and no test runs them end to end, so an import moved in
a refactor would otherwise rot them silently. A script that imports TensorFlow at module
level (seconds of start-up) is marked slow, found by reading its top-level imports.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("experiments", "benchmarks")  # the scripts at their top level; peers/ has its own
HEAVY = {"tensorflow", "keras", "tf_keras"}


def imports_tensorflow_at_start(script: Path) -> bool:
    """True when a top-level ``import``/``from`` of the script names TensorFlow or Keras."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        if any(name.split(".")[0] in HEAVY for name in names):
            return True
    return False


def scripts() -> list[object]:
    found = sorted(path for folder in FOLDERS for path in (REPO / folder).glob("*.py"))
    return [
        pytest.param(
            path,
            id=str(path.relative_to(REPO)),
            marks=[pytest.mark.slow] if imports_tensorflow_at_start(path) else [],
        )
        for path in found
    ]


#: Runs each light script's ``--help`` in one fresh interpreter (their shared imports,
#: numpy, scikit-learn, Pillow, are paid once): ``{path: [exit code, stdout + stderr]}``.
RUN_ALL = """
import contextlib, io, json, runpy, sys
results = {}
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as exit:
            code = exit.code or 0
        except BaseException as error:
            code = 1
            out.write(repr(error))
    results[path] = [code, out.getvalue()]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def light_answers() -> dict[str, list[object]]:
    """Every script that does not import TensorFlow at start, asked ``--help`` at once."""
    light = [str(p.values[0]) for p in scripts() if not p.marks]
    result = subprocess.run(
        [sys.executable, "-c", RUN_ALL, *light],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("script", scripts())
def test_the_script_answers_help(script: Path, request: pytest.FixtureRequest) -> None:
    if imports_tensorflow_at_start(script):  # slow: a fresh interpreter of its own
        result = subprocess.run(
            [sys.executable, str(script), "--help"],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            cwd=REPO,
        )
        code, output = result.returncode, result.stdout + result.stderr
    else:
        code, output = request.getfixturevalue("light_answers")[str(script)]
    assert code == 0, str(output)[-2000:]
    assert "usage:" in str(output)


def test_there_are_scripts_to_check() -> None:
    assert len(scripts()) >= 10
