"""``bash scripts/run.sh``, the README's one command: started on free ports, both URLs
answer, Ctrl-C stops both children."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.loopback import free_port

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "scripts" / "run.sh"
URL_LINE = re.compile(r"^\s*(Inference service|Web page):\s+(http://\S+)")


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


class RunScript:
    """``scripts/run.sh`` in its own process group, its output collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            ["bash", str(RUN), *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # one group to clean up, whatever happens
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def urls(self, timeout: float) -> dict[str, str]:
        """The URLs the script prints once both processes are ready."""
        found: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while len(found) < 2:
            try:
                line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no URLs after {timeout:.0f} s:\n{self.output()}")
            if line is None:
                pytest.fail(f"run.sh exited with {self.proc.wait()}:\n{self.output()}")
            self.lines.append(line)
            match = URL_LINE.match(line)
            if match:
                found[match.group(1)] = match.group(2)
        return found

    def output(self) -> str:
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return "\n".join(self.lines)

    def group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def cleanup(self) -> None:
        if self.group_alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        # the pipe ends when the whole group is gone; closed here, not left to the garbage
        # collector (whose ResourceWarning then fails whichever test it lands in)
        self._pump_thread.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def script_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BONEFRAC_")}
    env.update(extra)
    return env


@pytest.fixture
def started(tiny_models_dir: Path) -> Iterator[tuple[RunScript, int, int]]:
    service_port, ui_port = free_port(), free_port()
    run = RunScript(
        ["--skip-setup", "--service-port", str(service_port), "--ui-port", str(ui_port)],
        script_env(BONEFRAC_MODELS_DIR=str(tiny_models_dir)),
    )
    try:
        yield run, service_port, ui_port
    finally:
        run.cleanup()


@pytest.mark.e2e
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "term"])
def test_run_starts_both_and_stops_both(
    started: tuple[RunScript, int, int], stop_signal: signal.Signals
) -> None:
    run, service_port, ui_port = started
    urls = run.urls(timeout=120)
    assert urls == {
        "Inference service": f"http://127.0.0.1:{service_port}",
        "Web page": f"http://127.0.0.1:{ui_port}",
    }
    ready = requests.get(f"{urls['Inference service']}/readyz", timeout=5).json()
    assert ready["model"] == "bone-fracture"
    assert answers(f"{urls['Web page']}/_stcore/health")
    assert "<html" in requests.get(urls["Web page"], timeout=5).text.lower()
    assert "run: training" not in run.output()  # a model was there: nothing trained

    if stop_signal == signal.SIGINT:
        os.killpg(run.proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the group
    else:
        run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(timeout=30) == 0, run.output()
    deadline = time.monotonic() + 10
    while run.group_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not run.group_alive(), "a child outlived run.sh"
    assert not answers(f"{urls['Inference service']}/healthz")
    assert not answers(f"{urls['Web page']}/_stcore/health")
    assert "stopped" in run.output()


@pytest.mark.e2e
def test_a_crashed_service_stops_the_page_and_fails_the_run(
    started: tuple[RunScript, int, int],
) -> None:
    run, service_port, _ = started
    urls = run.urls(timeout=120)
    service = next(
        int(proc.name)
        for proc in Path("/proc").iterdir()
        if proc.name.isdigit()
        and (args := _cmdline(proc))[1:3] == ["-m", "service"]
        and str(service_port) in args
    )

    os.kill(service, signal.SIGKILL)

    assert run.proc.wait(timeout=30) == 1, run.output()
    assert "exited unexpectedly (status 137)" in run.output()
    deadline = time.monotonic() + 10
    while run.group_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not answers(f"{urls['Web page']}/_stcore/health")


def _cmdline(proc: Path) -> list[str]:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:  # the process ended meanwhile
        return []


def refused(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run the script with arguments it must refuse before setting anything up."""
    return subprocess.run(
        ["bash", str(RUN), "--skip-setup", *args],
        cwd=cwd,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown argument: --bogus"),
        (["--service-port", "8000", "--ui-port", "8000"], "two different ports"),
        (["--ui-port", "http"], "not a port number: http"),
        (["--data", "/nonexistent/xrays"], "no such dataset folder"),
        (["--data", "/tmp", "--synthetic"], "choose --data DIR or --synthetic, not both"),
        (["--retrain"], "--retrain trains on --data DIR or --synthetic"),
    ],
)
def test_run_refuses_bad_arguments_before_doing_anything(args: list[str], message: str) -> None:
    result = refused(args)
    assert result.returncode == 2
    assert message in result.stderr


def test_relative_data_path_is_read_from_the_callers_folder(tmp_path: Path) -> None:
    result = refused(["--data", "xrays"], cwd=tmp_path)
    assert result.returncode == 2
    assert f"no such dataset folder: {tmp_path}/xrays" in result.stderr


def test_run_help_lists_its_options() -> None:
    result = subprocess.run(
        ["bash", str(RUN), "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0
    for option in (
        "--data",
        "--synthetic",
        "--service-port",
        "--ui-port",
        "--skip-setup",
        "BONEFRAC_DATA_DIR",
    ):
        assert option in result.stdout


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("source", ["synthetic", "dataset"])
def test_run_trains_a_first_model_when_asked(
    source: str, tmp_path: Path, synthetic_dataset: Path
) -> None:
    """No model, and --synthetic (the demo CNN) or --data DIR (--recipe best): train one."""
    models = tmp_path / "models"
    service_port, ui_port = free_port(), free_port()
    args = ["--skip-setup", "--service-port", str(service_port), "--ui-port", str(ui_port)]
    args += ["--data", str(synthetic_dataset)] if source == "dataset" else ["--synthetic"]
    run = RunScript(
        args,
        script_env(
            BONEFRAC_MODELS_DIR=str(models),
            BONEFRAC_SYNTH_DIR=str(tmp_path / "synthetic"),
            BONEFRAC_SYNTH_PER_CLASS="6",
            BONEFRAC_EPOCHS="1",
        ),
    )
    try:
        urls = run.urls(timeout=600)
        ready = requests.get(f"{urls['Inference service']}/readyz", timeout=5).json()
        assert ready == {"status": "ready", "model": "bone-fracture", "version": 1}
        assert (tmp_path / "synthetic").is_dir() == (source == "synthetic")
        trained_on = synthetic_dataset if source == "dataset" else tmp_path / "synthetic"
        assert f"run: training bone-fracture on {trained_on}" in run.output()
        metadata = json.loads((models / "bone-fracture/1/metadata.json").read_text())
        expected_head = "linear" if source == "dataset" else "dense"  # --recipe best for --data
        assert metadata["hyperparameters"]["head"] == expected_head
        os.killpg(run.proc.pid, signal.SIGINT)
        assert run.proc.wait(timeout=30) == 0, run.output()
    finally:
        run.cleanup()


@pytest.mark.e2e
@pytest.mark.slow
def test_a_fresh_run_serves_the_shipped_model_without_training(tmp_path: Path) -> None:
    """The README's command on a fresh machine: no dataset, no training, a real model."""
    models = tmp_path / "models"
    service_port, ui_port = free_port(), free_port()
    run = RunScript(
        ["--skip-setup", "--service-port", str(service_port), "--ui-port", str(ui_port)],
        script_env(BONEFRAC_MODELS_DIR=str(models)),
    )
    try:
        urls = run.urls(timeout=600)
        assert "run: training" not in run.output()
        assert "assembling the shipped default model" in run.output()
        classes = requests.get(f"{urls['Inference service']}/classes", timeout=5).json()
        assert classes["version"] == 1
        assert "Bone Break Classification" in classes["trained_on"]
        assert len(classes["classes"]) == 10
        os.killpg(run.proc.pid, signal.SIGINT)
        assert run.proc.wait(timeout=30) == 0, run.output()
    finally:
        run.cleanup()
