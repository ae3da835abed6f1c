"""The images built and the real docker-compose.yml run, with podman (issue 13).

Builds Dockerfile.service (both targets) and Dockerfile.ui once per session, then runs the
Compose file with the real Compose binary against podman's Docker API: the trainer
one-shot fills the ``models`` volume, the service turns healthy and answers a real
radiograph on its published port, the page shows that answer in headless Chromium, a new
version written into the volume is served without a restart, two service replicas share
the load and one of them stops under load without a failed request, and ``down -v``
leaves nothing behind. Measured figures (build times, image sizes, throughput, spread)
go to test-artifacts/container-figures.json; docs/deployment.md quotes them.

Needs root and podman (``scripts/install-podman.sh``, called by scripts/test.sh); skips
with the reason elsewhere. Ports are published on random loopback ports
(``BONEFRAC_*_PORT=127.0.0.1:``), so nothing clashes with a stack already running.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from containers import (
    BASE_IMAGE,
    Compose,
    HealthChecks,
    build,
    docker_api,
    ensure_base_image,
    image_size_mb,
    inspect,
    leftovers,
    podman,
    published_port,
    unavailable_reason,
)
from support.browser import CHROMIUM_ARGS, chromium_path

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
PROJECT = "bonefrac-e2e"
MODEL = "bone-fracture"
IMAGES = {  # Compose's image names (docker-compose.yml), built the way it would build them
    "trainer": ("bonefrac-trainer:latest", "Dockerfile.service", "trainer"),
    "service": ("bonefrac-service:latest", "Dockerfile.service", None),
    "ui": ("bonefrac-ui:latest", "Dockerfile.ui", None),
}
LOAD_CLIENT = Path(__file__).with_name("load_client.py")

FIGURES: dict[str, Any] = {}


def record(**figures: Any) -> None:
    """Keep a measured figure for docs/deployment.md (written after every test)."""
    FIGURES.update(figures)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "container-figures.json").write_text(json.dumps(FIGURES, indent=2) + "\n")


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """The three images, built once; skips where containers cannot run."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    record(base_standin_build_s=round(ensure_base_image(), 1))
    built = {}
    for role, (tag, dockerfile, target) in IMAGES.items():
        seconds = build(tag, dockerfile, target)
        record(**{f"{role}_build_s": round(seconds, 1), f"{role}_image_mb": image_size_mb(tag)})
        built[role] = tag
    record(base_image_mb=image_size_mb(BASE_IMAGE))
    return built


@pytest.fixture(scope="module")
def xray(radiograph_file: Path) -> Path:
    """The session's radiograph (real when present, else a stand-in), a file of its own."""
    return radiograph_file


@pytest.fixture(scope="module")
def stack(images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compose]:
    """``compose up -d --no-build`` of the real file, healthchecks run as Docker would."""
    folder = tmp_path_factory.mktemp("podman-api")
    env = {"BONEFRAC_SERVICE_PORT": "127.0.0.1:", "BONEFRAC_UI_PORT": "127.0.0.1:"}
    with docker_api(folder) as docker_host:
        compose = Compose(PROJECT, docker_host, env)
        compose("down", "--volumes", "--remove-orphans", "--timeout", "5")  # an old run's
        checks = HealthChecks(compose)
        checks.start()
        try:
            start = time.monotonic()
            compose("up", "--detach", "--no-build")
            record(compose_up_s=round(time.monotonic() - start, 1))
            yield compose
        finally:
            checks.stop()
            subprocess.run(
                [*compose.command(), "down", "--volumes", "--remove-orphans", "--timeout", "5"],
                env=compose.env,
                capture_output=True,
                timeout=300,
                check=False,
            )


def only(compose: Compose, service: str) -> str:
    (name,) = compose.containers(service)
    return name


def service_url(compose: Compose) -> str:
    return f"http://127.0.0.1:{published_port(only(compose, 'service'), 8000)}"


def predict(url: str, xray: Path) -> requests.Response:
    with xray.open("rb") as handle:
        return requests.post(f"{url}/predict", files={"file": (xray.name, handle)}, timeout=60)


def run_in(image: str, *command: str, volume: str) -> str:
    """A throwaway container of ``image`` (as its own user) with the models volume."""
    return podman(
        "run",
        "--rm",
        "-v",
        f"{volume}:/models",
        "--entrypoint",
        command[0],
        image,
        *command[1:],
        timeout=300,
    )


def test_images_run_as_non_root_and_only_the_trainer_has_tensorflow(
    images: dict[str, str],
) -> None:
    for tag in images.values():
        assert podman("image", "inspect", "--format", "{{.Config.User}}", tag).strip() == (
            "10001:10001"
        )
    for role in ("service", "ui"):
        check = podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", images[role])
        assert "/opt/bonefrac/healthcheck.py" in check, check  # kept: built --format docker
    probe = (
        "import importlib.util as u, json; "
        "print(json.dumps({m: u.find_spec(m) is not None for m in "
        "('tensorflow', 'trainer', 'service', 'ui', 'modelio', 'ai_edge_litert', 'pydicom', "
        "'openvino')}))"
    )
    found = {
        role: json.loads(podman("run", "--rm", "--entrypoint", "python", tag, "-c", probe))
        for role, tag in images.items()
    }
    assert found["service"] == {
        "tensorflow": False, "trainer": False, "service": True, "ui": False,
        "modelio": True, "ai_edge_litert": True, "pydicom": True, "openvino": True,
    }  # fmt: skip
    assert found["ui"]["tensorflow"] is False
    assert found["ui"]["modelio"]  # the page's DICOM previews decode with modelio
    assert found["ui"]["pydicom"]
    assert found["trainer"]["tensorflow"]
    assert found["trainer"]["trainer"]
    assert found["service"]["tensorflow"] is False  # and the service image is the small one
    assert FIGURES["service_image_mb"] < FIGURES["trainer_image_mb"] / 2


def test_trainer_one_shot_puts_a_model_in_the_volume_and_exits_0(stack: Compose) -> None:
    trainer = inspect(only(stack, "trainer"))
    assert trainer["State"]["Status"] == "exited"
    assert trainer["State"]["ExitCode"] == 0
    assert f"assembled /models/{MODEL}/1" in podman("logs", only(stack, "trainer"))
    listing = run_in(
        IMAGES["service"][0], "ls", "-ln", f"/models/{MODEL}", volume=f"{PROJECT}_models"
    )
    (version,) = [line.split() for line in listing.splitlines() if line.endswith(" 1")]
    assert version[2:4] == ["10001", "10001"]  # written by the non-root trainer


def test_the_service_turns_healthy_and_predicts_a_real_radiograph(
    stack: Compose, xray: Path
) -> None:
    name = only(stack, "service")
    assert inspect(name)["State"]["Health"]["Status"] == "healthy"
    answer = predict(service_url(stack), xray)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    classes = requests.get(f"{service_url(stack)}/classes", timeout=10).json()
    assert body["label"] in json.dumps(classes)
    assert (body["model"], body["version"]) == (MODEL, 1)
    served = requests.get(f"{service_url(stack)}/models", timeout=10).json()["served"]
    assert served["runtime"].startswith("openvino-")  # the default runtime, in the image
    assert answer.headers["X-Bonefrac-Replica"] == inspect(name)["Config"]["Hostname"]
    assert inspect(name)["Config"]["User"] == "10001:10001"


def test_the_page_shows_a_prediction_in_the_browser(stack: Compose, xray: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    chromium = chromium_path()
    page_url = f"http://127.0.0.1:{published_port(only(stack, 'ui'), 8501)}"
    assert requests.get(f"{page_url}/_stcore/health", timeout=10).ok
    expected = predict(service_url(stack), xray).json()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(page_url)
            expect(page.get_by_text("Bone fracture X-ray classifier")).to_be_visible(timeout=60_000)
            page.locator("input[type=file]").set_input_files(str(xray))
            label = page.get_by_role("heading", name=expected["label"], exact=True)
            expect(label).to_be_visible(timeout=60_000)
            answered_by = f"Answered by model {expected['model']}, version {expected['version']}"
            expect(page.get_by_text(answered_by)).to_be_visible()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "containers-ui.png"), full_page=True)
        finally:
            browser.close()


#: Publishes a copy of version 1 as version 2 the way the trainer does (a hidden folder
#: renamed into place), with its metadata saying 2; run as the image's non-root user.
PUBLISH_COPY = """
import json, pathlib, shutil
model = pathlib.Path('/models/bone-fracture')
staging = model / '.staging-2'
shutil.copytree(model / '1', staging)
meta = json.loads((staging / 'metadata.json').read_text())
meta['version'] = 2
(staging / 'metadata.json').write_text(json.dumps(meta))
staging.rename(model / '2')
"""


def test_a_new_version_in_the_volume_is_served_without_restart(stack: Compose, xray: Path) -> None:
    name = only(stack, "service")
    before = inspect(name)["State"]
    run_in(IMAGES["trainer"][0], "python", "-c", PUBLISH_COPY, volume=f"{PROJECT}_models")
    url = service_url(stack)
    version = None
    for _ in range(120):  # the service looks every 5 s (BONEFRAC_RELOAD_INTERVAL_S)
        answer = predict(url, xray)
        assert answer.status_code == 200, answer.text
        version = answer.json()["version"]
        if version == 2:
            break
        time.sleep(0.5)
    assert version == 2
    after = inspect(name)["State"]
    assert after["StartedAt"] == before["StartedAt"]  # the same process, not restarted
    assert inspect(name)["RestartCount"] == 0


def load(stack: Compose, xray: Path, requests_: int, concurrency: int) -> subprocess.Popen[str]:
    """The retrying load client (load_client.py) in a container on the Compose network."""
    network = f"{PROJECT}_bonefrac"
    command = [
        "podman", "run", "--rm", "--network", network,
        "-v", f"{LOAD_CLIENT}:/opt/load_client.py:ro", "-v", f"{xray}:/opt/{xray.name}:ro",
        IMAGES["ui"][0], "python", "/opt/load_client.py", "http://service:8000",
        f"/opt/{xray.name}", str(requests_), str(concurrency),
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(client: subprocess.Popen[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    out, err = client.communicate(timeout=600)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines, err[-2000:]
    assert lines[-1].get("summary"), err[-2000:]
    return lines[:-1], lines[-1]


def test_two_replicas_share_the_load_and_one_stops_without_a_failed_request(
    stack: Compose, xray: Path
) -> None:
    # One replica first: its throughput is the unit docs/deployment.md sizes with.
    _, single = finish(load(stack, xray, 60, 2))
    assert single["failed"] == 0
    record(one_replica_per_second=single["per_second"], one_replica_concurrency=2)

    stack("up", "--detach", "--no-build", "--no-recreate", "--scale", "service=2")
    replicas = stack.containers("service", running_only=True)
    assert len(replicas) == 2
    hostnames = {inspect(name)["Config"]["Hostname"]: name for name in replicas}
    for name in replicas:
        assert inspect(name)["State"]["Health"]["Status"] == "healthy"

    _, both = finish(load(stack, xray, 60, 2))
    assert both["failed"] == 0
    assert set(both["replicas"]) == set(hostnames)  # every replica answered some
    record(two_replicas_per_second=both["per_second"], two_replicas_spread=both["replicas"])

    # Under load, stop one replica (SIGTERM, then it drains: stop_grace_period).
    victim = stack.containers("service")[-1]
    client = load(stack, xray, 150, 2)
    seen: list[dict[str, Any]] = []
    stopped_at: list[int] = []
    stop_done = threading.Event()

    def stop_victim() -> None:
        podman("stop", victim, timeout=120)
        stopped_at.append(len(seen))
        stop_done.set()

    assert client.stdout is not None
    for line in client.stdout:
        seen.append(json.loads(line))
        if len(seen) == 30:
            threading.Thread(target=stop_victim, daemon=True).start()
        if seen[-1].get("summary"):
            break
    assert stop_done.wait(timeout=120), "podman stop did not return"
    client.wait(timeout=60)
    *answers, summary = seen
    assert summary.get("summary"), summary
    assert summary["failed"] == 0, [a for a in answers if a["status"] != 200]
    survivor = next(h for h, n in hostnames.items() if n != victim)
    # Answers read after the stop returned, less a margin for those in flight or unread.
    before, after = answers[:30], answers[stopped_at[0] + 4 :]
    assert len({a["replica"] for a in before}) == 2, Counter(a["replica"] for a in before)
    assert after, "the load ended before the replica had stopped; send more requests"
    assert {a["replica"] for a in after} == {survivor}
    record(
        stop_under_load={
            "requests": summary["requests"],
            "failed": summary["failed"],
            "retried": summary["retried"],
            "served": summary["replicas"],
            "answered_after_the_stop": len(after),
        }
    )


def test_down_removes_containers_volumes_and_networks(stack: Compose) -> None:
    assert any(leftovers(PROJECT).values())  # the check can see what is there
    stack("down", "--volumes", "--remove-orphans", "--timeout", "30")
    assert leftovers(PROJECT) == {"containers": [], "volumes": [], "networks": []}


def test_the_harness_knows_when_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The skip reason names the missing piece (checked without touching podman)."""
    import containers

    monkeypatch.setattr(containers.shutil, "which", lambda _name: None)
    assert "podman is not installed" in (containers.unavailable_reason() or "")
    monkeypatch.setattr(containers.shutil, "which", lambda _name: "/usr/bin/podman")
    monkeypatch.setattr(containers.os, "geteuid", lambda: 1000)
    assert "root" in (containers.unavailable_reason() or "")
