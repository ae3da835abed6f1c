"""bonefrac against the serving stacks people would pick instead, in one run.

Every server serves the same file, ``model.tflite`` of one version folder (the
shipped default model: ``python -m trainer assemble``), with the same decoding
(:func:`modelio.images.load_array`); the peers run it on the TFLite runtime
(ai-edge-litert), bonefrac on OpenVINO by default and on LiteRT in its ``litert`` rows.
Each runs in turn on 127.0.0.1, started from its own virtual environment
(``make_venvs.sh``), and gets the same images, the same client (``http.client``, one
keep-alive connection per client thread) and the same number of requests:

============  ==================================================================
bonefrac      ``python -m service`` (this project), its defaults: ``model.tflite``
              on OpenVINO in float32, one single-threaded runner per core under
              load and one on every core for a request alone, FastAPI + uvicorn,
              multipart ``/predict``
bonefrac-     the same with ``BONEFRAC_RUNTIME=tflite``: LiteRT instead of
litert        OpenVINO (the default where OpenVINO is not installed)
bonefrac-     LiteRT with one interpreter on every core: the service's defaults
litert-single before 2026-12-06, the baseline of "2x the images per second"
bonefrac-     the defaults with ``BONEFRAC_INFERENCE_PRECISION=bf16`` (AMX; its
bf16          answers are rounded, so its check allows 0.1, not 1e-4)
bentoml       ``bentoml serve``: 2 workers (one per core), adaptive batching,
              multipart upload (``bentoml_service.py``)
litserve      ``LitServer``: 2 CPU workers, dynamic batching, multipart upload
              (``litserve_server.py``)
pytriton      Triton's HTTP server and dynamic batcher, 2 model instances, KServe
              v2 binary protocol (``pytriton_server.py``)
kserve        ``kserve.ModelServer``: 2 uvicorn workers, v1 TF Serving-style JSON
              body with base64 images (``kserve_server.py``)
rayserve      Ray Serve: 2 replicas of 1 CPU, ``@serve.batch``, multipart upload
              (``rayserve_app.py``)
============  ==================================================================

Each peer is set up as its documentation advises for CPU inference: one worker
(process, replica or model instance) per core, each TFLite interpreter on one thread
(so that the workers do not fight over the two cores), and its request batcher where
it has one (at most ``--max-batch`` images, waiting at most ``--batch-wait-ms``).
bonefrac runs its own defaults. The module docstring of each peer's file says how.

For each server: start-to-ready (process start until the first prediction answers),
a check that its probabilities for one image match the in-process reference (the same
file through ai-edge-litert here), a warm-up, then ``--requests`` requests at 1, 8 and
32 concurrent clients (p50, p95, p99, throughput, and the CPU time all its processes
used per request: two cores busy serving fewer requests means more work per answer),
and the resident memory of all
its processes (the sum of VmRSS over the process tree, and the proportional set size,
PSS, which counts pages shared between forked workers once). Then it is stopped with
its process group (SIGINT for LitServe, whose workers outlive a SIGTERM, and for Ray
Serve's driver, which shuts Serve and Ray down on it; SIGTERM otherwise), and any
process of its tree still alive after 20 s is killed. Every loop is bounded: a
request times out after 60 s, a row after ``--budget-s`` (300 s), a start after 240 s. The whole
sequence runs ``--rounds`` times (default 2: in the given order, then reversed), and
each figure is the best a server reached over the rounds: a shared machine only ever
slows a measurement down, and a slow spell then hits different servers each round.

Beside the table: the model's multiply-accumulates per image and the machine's peak
(large matrix products in the same run, float32 and int8), see :mod:`limits`.

Usage (after ``bash benchmarks/peers/make_venvs.sh`` and ``python -m trainer
assemble --models /tmp/peers-models``)::

    nice -n 10 .venv/bin/python benchmarks/peers/run.py --models /tmp/peers-models \\
        [--requests 160] [--rounds 2] [--servers bonefrac,bentoml,...] [--json out.json]

``--smoke`` starts each server, sends one request, checks it and stops it (the test's
mode). Images are real radiographs from ../shared/datasets/bone-break-classification
when present, synthetic ones from :mod:`trainer.synth` otherwise.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from peer_model import MODEL_NAME, PeerModel  # noqa: E402

REAL_DATA = REPO.parent / "shared/datasets/bone-break-classification"
VENVS = HERE / ".venvs"
CLIENTS = (1, 8, 32)
READY_TIMEOUT_S = 240.0
REQUEST_TIMEOUT_S = 60.0
STOP_GRACE_S = 20.0

#: (path, body, headers) of one HTTP POST
Request = tuple[str, bytes, dict[str, str]]


# --------------------------------------------------------------------- request bodies


def multipart(field_name: str, data: bytes, path: str = "/predict") -> Request:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; '
            f'filename="image.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def kserve_v1(data: bytes) -> Request:
    """KServe v1 (TF Serving's REST body): base64 in JSON."""
    body = json.dumps({"instances": [{"image_bytes": {"b64": base64.b64encode(data).decode()}}]})
    return (
        f"/v1/models/{MODEL_NAME}:predict",
        body.encode(),
        {"Content-Type": "application/json"},
    )


def kserve_v2_binary(data: bytes) -> Request:
    """KServe v2 with Triton's binary extension: a ``BYTES [1, 1]`` tensor, the encoded
    image after its 4-byte little-endian length; the answer as JSON."""
    tensor = len(data).to_bytes(4, "little") + data
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1, 1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(tensor)},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}],
        }
    ).encode()
    return (
        f"/v2/models/{MODEL_NAME}/infer",
        header + tensor,
        {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        },
    )


# --------------------------------------------------------------- answers to probabilities


def bonefrac_probabilities(answer: dict, classes: list[str]) -> list[float]:
    by_label = {p["label"]: p["probability"] for p in answer["probabilities"]}
    return [by_label[c] for c in classes]


def plain_probabilities(answer: dict | list, classes: list[str]) -> list[float]:
    return (answer[0] if isinstance(answer, list) else answer)["probabilities"]


def kserve_probabilities(answer: dict, classes: list[str]) -> list[float]:
    return answer["predictions"][0]["probabilities"]


def triton_probabilities(answer: dict, classes: list[str]) -> list[float]:
    return answer["outputs"][0]["data"]


# ------------------------------------------------------------------------ the servers


@dataclass
class Server:
    name: str
    venv: Path  # its interpreter is venv/bin/python
    argv: list[str]  # after the interpreter
    ready_path: str
    request: Callable[[bytes], Request]
    probabilities: Callable[[dict | list, list[str]], list[float]]
    stop_signal: int = signal.SIGTERM
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = HERE
    #: largest probability difference from the float32 reference its first answer may
    #: have (bf16 rounds every activation: its cost is measured in grouped CV instead,
    #: experiments/runtime_precision.py)
    tolerance: float = 1e-4

    @property
    def python(self) -> Path:
        return self.venv / "bin/python"


def single_env() -> dict[str, str]:
    """The service's defaults before 2026-12-06: LiteRT, one interpreter on every core."""
    return {
        "BONEFRAC_RUNTIME": "tflite",
        "BONEFRAC_INTERPRETERS": "1",
        "BONEFRAC_INFERENCE_THREADS": str(len(os.sched_getaffinity(0))),
        "BONEFRAC_SOLO_THREADS": "0",
    }


def _bonefrac(name: str, env: dict[str, str], tolerance: float = 1e-4) -> Server:
    return Server(
        name,
        REPO / ".venv",
        ["-m", "service", "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning"],
        "/readyz",
        lambda data: multipart("file", data),
        bonefrac_probabilities,
        cwd=REPO,
        env=env,
        tolerance=tolerance,
    )


def servers() -> dict[str, Server]:
    return {
        "bonefrac": _bonefrac("bonefrac", {}),
        "bonefrac-litert": _bonefrac("bonefrac-litert", {"BONEFRAC_RUNTIME": "tflite"}),
        "bonefrac-litert-single": _bonefrac("bonefrac-litert-single", single_env()),
        "bonefrac-bf16": _bonefrac(
            "bonefrac-bf16", {"BONEFRAC_INFERENCE_PRECISION": "bf16"}, tolerance=0.1
        ),
        "bentoml": Server(
            "bentoml",
            VENVS / "bentoml",
            [
                "-m",
                "bentoml",
                "serve",
                "bentoml_service:Bonefrac",
                "--host",
                "127.0.0.1",
                "--port",
                "{port}",
            ],
            "/readyz",
            lambda data: multipart("image", data),
            plain_probabilities,
        ),
        "litserve": Server(
            "litserve",
            VENVS / "litserve",
            ["litserve_server.py"],
            "/health",
            lambda data: multipart("file", data),
            plain_probabilities,
            stop_signal=signal.SIGINT,
        ),
        "pytriton": Server(
            "pytriton",
            VENVS / "pytriton",
            ["pytriton_server.py"],
            f"/v2/models/{MODEL_NAME}/ready",
            kserve_v2_binary,
            triton_probabilities,
        ),
        "kserve": Server(
            "kserve",
            VENVS / "kserve",
            ["kserve_server.py"],
            f"/v1/models/{MODEL_NAME}",
            kserve_v1,
            kserve_probabilities,
        ),
        "rayserve": Server(
            "rayserve",
            VENVS / "rayserve",
            ["rayserve_app.py"],
            "/",
            lambda data: multipart("file", data, "/"),
            plain_probabilities,
            stop_signal=signal.SIGINT,
        ),
    }


def libdir(python: Path) -> str:
    """The interpreter's LIBDIR (PyTriton's Python backend stub loads libpython from it)."""
    code = "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------- process trees


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None
    for a process that is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process."""
    fields = _stat_fields(pid)
    return None if fields is None else (int(fields[1]), int(fields[19]))


def process_tree(root: int) -> dict[int, int]:
    """The root and every descendant: pid -> start time (to tell a reused pid apart)."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat:
                parents.setdefault(stat[0], []).append(int(entry.name))
                starts[int(entry.name)] = stat[1]
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in starts and pid not in tree:
            tree[pid] = starts[pid]
            todo.extend(parents.get(pid, []))
    return tree


def cpu_seconds(pids: dict[int, int]) -> dict[int, tuple[int, float]]:
    """User plus system CPU seconds each live process has used so far, with its start
    time (a pid reused by a new process is a different process)."""
    used = {}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is None:
            continue
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        used[pid] = (int(fields[19]), ticks / os.sysconf("SC_CLK_TCK"))
    return used


def cpu_spent(before: dict[int, tuple[int, float]], after: dict[int, tuple[int, float]]) -> float:
    """CPU seconds used between two :func:`cpu_seconds` readings: what each process seen
    at both added, and all of what a process started since used. A process that ended in
    between is missed (the figure errs low, never below zero)."""
    spent = 0.0
    for pid, (start, seconds) in after.items():
        then = before.get(pid)
        spent += seconds - then[1] if then is not None and then[0] == start else seconds
    return spent


def memory_mib(pids: dict[int, int]) -> tuple[float, float]:
    """Sum of VmRSS and of PSS over the processes, in MiB."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss / 1024, pss / 1024


class Running:
    """One server process group, started in its own session and stopped with it."""

    def __init__(self, server: Server, env: dict[str, str], log: Path) -> None:
        self.server = server
        self.port = free_port()
        argv = [a.replace("{port}", str(self.port)) for a in server.argv]
        env = {**env, "PEER_PORT": str(self.port), **server.env}
        env["PEER_GRPC_PORT"], env["PEER_METRICS_PORT"] = str(free_port()), str(free_port())
        self._log = log.open("wb")
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [str(server.python), *argv],
            cwd=server.cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.seen: dict[int, int] = {}

    def track(self) -> dict[int, int]:
        """The live tree now; every process ever seen is remembered for :meth:`stop`."""
        tree = process_tree(self.process.pid)
        self.seen.update(tree)
        return tree

    def _alive(self) -> list[int]:
        return [pid for pid, start in self.seen.items() if (_stat(pid) or (0, -1))[1] == start]

    def stop(self) -> None:
        self.track()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, self.server.stop_signal)
        deadline = time.monotonic() + STOP_GRACE_S
        while self._alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self._alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(2)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self._log.close()


# ----------------------------------------------------------------------------- client


def post(conn: http.client.HTTPConnection, request: Request) -> tuple[int, bytes]:
    path, body, headers = request
    conn.request("POST", path, body=body, headers={**headers, "Connection": "keep-alive"})
    response = conn.getresponse()
    return response.status, response.read()


def wait_ready(running: Running, first: Request) -> tuple[float, bytes]:
    """Seconds from start to the first prediction answered, and that answer."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    ready_route = False
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise RuntimeError(f"{running.server.name} exited with {running.process.returncode}")
        running.track()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=REQUEST_TIMEOUT_S)
            if not ready_route:
                conn.request("GET", running.server.ready_path)
                response = conn.getresponse()
                body = response.read()
                ready_route = response.status == 200 and b'"ready":false' not in body
            if ready_route:
                status, body = post(conn, first)
                conn.close()
                if status == 200:
                    return time.perf_counter() - running.started, body
            conn.close()
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{running.server.name} not ready in {READY_TIMEOUT_S:.0f} s")


@dataclass
class Row:
    clients: int
    latencies: list[float]  # seconds
    wall: float

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.wall


def load(port: int, requests: list[Request], count: int, clients: int, budget_s: float) -> Row:
    """``count`` requests from ``clients`` threads, each on its own keep-alive connection,
    cycling through the images; bounded by ``budget_s`` seconds. Any non-200 fails it."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + budget_s
    shares = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]

    def client(index: int, share: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        mine = []
        try:
            for i in range(share):
                if time.monotonic() > deadline:
                    errors.append("time budget exceeded")
                    break
                start = time.perf_counter()
                status, body = post(conn, requests[(index * 7 + i) % len(requests)])
                mine.append(time.perf_counter() - start)
                if status != 200:
                    errors.append(f"{status} {body[:200]!r}")
                    break
        except OSError as exc:
            errors.append(repr(exc))
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i, s)) for i, s in enumerate(shares)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} of {count} requests failed, e.g. {errors[0]}")
    return Row(clients, latencies, wall)


# ------------------------------------------------------------------------------ setup


def load_images(count: int) -> tuple[list[bytes], str]:
    """Real radiographs spread over the classes when present, else synthetic ones."""
    if REAL_DATA.is_dir():
        files = sorted(REAL_DATA.glob("*/Train/*.jpg"))
        step = max(1, len(files) // count)
        return [f.read_bytes() for f in files[::step][:count]], f"real radiographs ({REAL_DATA})"
    from trainer.synth import write_dataset  # noqa: PLC0415

    out = Path(tempfile.mkdtemp(prefix="peers-synth-"))
    write_dataset(out / "data", per_class=max(2, count // 10 + 1), size=256, seed=0)
    files = sorted(p for p in (out / "data").rglob("*") if p.suffix in {".jpg", ".png"})
    return [f.read_bytes() for f in files[:count]], "synthetic radiographs (trainer.synth)"


def newest_version(models: Path) -> Path:
    versions = sorted(
        (p for p in (models / "bone-fracture").glob("*") if p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    if not versions:
        sys.exit(
            f"no model in {models}/bone-fracture; make one with\n"
            f"  .venv/bin/python -m trainer assemble --models {models}"
        )
    return versions[-1]


def base_env(models: Path, version: Path, args: argparse.Namespace) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
    }
    return env | {
        "BONEFRAC_MODELS_DIR": str(models),
        "BONEFRAC_RELOAD_INTERVAL_S": "0",
        "PEER_MODEL_DIR": str(version),
        "PEER_WORKERS": str(args.workers),
        "PEER_THREADS": str(args.threads),
        "PEER_MAX_BATCH": str(args.max_batch),
        "PEER_BATCH_WAIT_MS": str(args.batch_wait_ms),
        "BENTOML_DO_NOT_TRACK": "true",
        "RAY_USAGE_STATS_ENABLED": "0",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }


# ------------------------------------------------------------------------- one server


def measure(
    server: Server,
    *,
    env: dict[str, str],
    images: list[bytes],
    reference: np.ndarray,
    classes: list[str],
    args: argparse.Namespace,
    logs: Path,
) -> dict:
    if not server.python.exists():
        raise RuntimeError(f"no {server.python}: run benchmarks/peers/make_venvs.sh {server.name}")
    if server.name == "pytriton":
        env = {**env, "LD_LIBRARY_PATH": libdir(server.python)}
    requests = [server.request(data) for data in images]
    running = Running(server, env, logs / f"{server.name}.log")
    result: dict = {"server": server.name}
    try:
        ready, body = wait_ready(running, requests[0])
        probabilities = np.asarray(server.probabilities(json.loads(body), classes))
        result["ready_s"] = ready
        result["max_abs_diff"] = float(np.max(np.abs(probabilities - reference)))
        if result["max_abs_diff"] > server.tolerance:
            raise RuntimeError(f"{server.name} answers {probabilities}, expected {reference}")
        print(f"  {server.name}: ready in {ready:.2f} s, answer matches", flush=True)
        if not args.smoke:
            load(running.port, requests, 2 * max(CLIENTS), max(CLIENTS), args.budget_s)  # warm-up
            for clients in CLIENTS:
                cpu_before = cpu_seconds(running.track())
                row = load(running.port, requests, args.requests, clients, args.budget_s)
                cpu_ms = cpu_spent(cpu_before, cpu_seconds(running.track())) * 1000
                result[f"c{clients}"] = {
                    "p50_ms": row.pct(50),
                    "p95_ms": row.pct(95),
                    "p99_ms": row.pct(99),
                    "rps": row.throughput,
                    "cpu_ms": cpu_ms / len(row.latencies),
                }
                print(
                    f"    {clients:2d} clients: p50 {row.pct(50):6.1f} ms, "
                    f"{row.throughput:5.1f} req/s, {cpu_ms / len(row.latencies):5.1f} ms "
                    "of CPU per request",
                    flush=True,
                )
            tree = running.track()
            result["processes"] = len(tree)
            result["rss_mib"], result["pss_mib"] = memory_mib(tree)
    finally:
        running.stop()
    return result


# ---------------------------------------------------------------------------- report


COLUMNS = (
    ("p50 1c", lambda r: r["c1"]["p50_ms"], "ms", False),
    ("p95 1c", lambda r: r["c1"]["p95_ms"], "ms", False),
    ("p99 1c", lambda r: r["c1"]["p99_ms"], "ms", False),
    ("req/s 8c", lambda r: r["c8"]["rps"], "", True),
    ("p50 8c", lambda r: r["c8"]["p50_ms"], "ms", False),
    ("CPU ms 8c", lambda r: r["c8"]["cpu_ms"], "ms", False),
    ("req/s 32c", lambda r: r["c32"]["rps"], "", True),
    ("p50 32c", lambda r: r["c32"]["p50_ms"], "ms", False),
    ("ready s", lambda r: r["ready_s"], "s", False),
    ("RSS MiB", lambda r: r["rss_mib"], "", False),
    ("PSS MiB", lambda r: r["pss_mib"], "", False),
)


def best_of(tries: list[dict]) -> dict:
    """One server's figures over the rounds: each the best it reached (lowest latency,
    time and memory, highest throughput), since a shared machine only ever slows a
    measurement down. Rounds that failed are left out and counted (a peer that
    sometimes fails to start, as PyTriton's handshake once did, still gets its row and
    the count says so); the server fails only when every round did."""
    failed = [t for t in tries if "error" in t]
    tries = [t for t in tries if "error" not in t]
    if not tries:
        return failed[0]
    best = dict(tries[0])
    best["failed_rounds"] = len(failed)
    for key in ("ready_s", "rss_mib", "pss_mib"):
        best[key] = min(t[key] for t in tries)
    for clients in CLIENTS:
        row = f"c{clients}"
        best[row] = {
            key: (max if key == "rps" else min)(t[row][key] for t in tries) for key in tries[0][row]
        }
    return best


def report(results: list[dict]) -> None:
    base = next((r for r in results if r["server"] == "bonefrac"), None)
    head = f"{'':18}" + "".join(f"{name:>11}" for name, *_ in COLUMNS) + f"{'procs':>7}"
    print("\n" + head)
    for r in results:
        if "c1" not in r:
            print(f"{r['server']:18} {r.get('error', 'no figures')}")
            continue
        cells = "".join(f"{get(r):11.1f}" for _, get, *_ in COLUMNS)
        failed = r.get("failed_rounds", 0)
        note = f"  ({failed} round{'s' if failed > 1 else ''} failed)" if failed else ""
        print(f"{r['server']:18}{cells}{r['processes']:7d}{note}")
    if base is None or "c1" not in base:
        return
    print(
        "\nas a ratio to bonefrac (peer / bonefrac: above 1 is slower, bigger or faster for req/s)"
    )
    print(head[:-7])
    for r in results:
        if "c1" in r:
            print(
                f"{r['server']:18}"
                + "".join(f"{get(r) / get(base):11.2f}" for _, get, *_ in COLUMNS)
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=REPO / "models", help="models folder")
    parser.add_argument("--servers", default=",".join(servers()), help="comma separated")
    parser.add_argument("--requests", type=int, default=160, help="requests per row")
    parser.add_argument("--images", type=int, default=50, help="distinct images to cycle")
    parser.add_argument("--workers", type=int, default=2, help="peer workers/replicas")
    parser.add_argument("--threads", type=int, default=1, help="TFLite threads per peer worker")
    parser.add_argument("--max-batch", type=int, default=8, help="peers' batch limit")
    parser.add_argument("--batch-wait-ms", type=float, default=2.0, help="peers' batch wait")
    parser.add_argument("--budget-s", type=float, default=300.0, help="time bound of a row")
    parser.add_argument("--rounds", type=int, default=2, help="runs of every server (best kept)")
    parser.add_argument("--smoke", action="store_true", help="one request per server only")
    parser.add_argument("--no-limits", action="store_true", help="skip op count and peak")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    models = args.models.resolve()
    version = newest_version(models)
    images, source = load_images(1 if args.smoke else args.images)
    model = PeerModel(version, threads=1)
    reference = np.asarray(model.predict_bytes(images[:1])[0]["probabilities"])
    print(f"model {version}; images: {len(images)} {source}")
    print(
        f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, load "
        f"{os.getloadavg()[0]:.1f}; {args.requests} requests per row; peers: "
        f"{args.workers} workers x {args.threads} TFLite thread, batches <= {args.max_batch} "
        f"within {args.batch_wait_ms} ms\n"
    )
    env = base_env(models, version, args)
    logs = Path(tempfile.mkdtemp(prefix="peers-logs-"))
    known = servers()
    names = args.servers.split(",")
    rounds: list[list[dict]] = []
    for index in range(1 if args.smoke else args.rounds):
        order = names if index % 2 == 0 else names[::-1]  # a slow spell hits others next
        print(f"round {index + 1}: {', '.join(order)}", flush=True)
        measured = {}
        for name in order:
            print(f"{name} ...", flush=True)
            try:
                measured[name] = measure(
                    known[name],
                    env=env,
                    images=images,
                    reference=reference,
                    classes=model.classes,
                    args=args,
                    logs=logs,
                )
            except Exception as exc:  # one broken peer must not lose the others' rows
                print(f"  {name} FAILED: {exc} (log: {logs / (name + '.log')})", flush=True)
                measured[name] = {"server": name, "error": str(exc)}
        rounds.append([measured[name] for name in names])
    results = (
        rounds[0] if args.smoke else [best_of([r[i] for r in rounds]) for i in range(len(names))]
    )
    figures: dict = {
        "results": results,
        "rounds": rounds,
        "source": source,
        "load_avg": os.getloadavg(),
    }
    if not args.smoke:
        report(results)
        if not args.no_limits:
            figures["limits"] = print_limits(version)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if any("error" in r for r in results):
        sys.exit(1)


def print_limits(version: Path) -> dict:
    """The model's arithmetic per image and the machine's peak, measured now."""
    from limits import model_macs, peak_gflops  # noqa: PLC0415

    macs = model_macs(version / "model.tflite")
    peaks = peak_gflops(threads=len(os.sched_getaffinity(0)))
    gflop = 2 * macs["total"] / 1e9
    print(
        f"\nthe limit: {macs['total'] / 1e9:.2f} GMAC = {gflop:.2f} GFLOP per image "
        f"(convolutions {macs.get('CONV_2D', 0) / 1e9:.2f}, depthwise "
        f"{macs.get('DEPTHWISE_CONV_2D', 0) / 1e9:.2f} GMAC)"
    )
    for name, value in peaks.items():
        if value:
            print(f"  peak {name:16} {value:7.0f} GOP/s -> at most {value / gflop:6.1f} images/s")
    return {"gmac_per_image": macs["total"] / 1e9, "peak_gops": peaks}


if __name__ == "__main__":
    main()
