"""Side-by-side speed of the inference service, on the same images, in one run.

1. bare:    in-process decode + resize (the shared preprocessing) + TFLite forward;
2. service: ``python -m service`` over HTTP on loopback, 1 client and 8 concurrent
            (the 1-client row alternates with the bare one in short rounds, so
            the machine's noise hits both sides of their ratio alike);
3. naive:   what most fracture-classifier repos do, a FastAPI route that decodes with
            Pillow and calls ``keras_model.predict()`` on each request (here the same
            SavedModel wrapped in ``keras.layers.TFSMLayer``), also 1 and 8 clients.

Prints p50/p95 latency and throughput for each, the ratios against the targets, and the
service's start-to-ready time and resident memory. For a model with class maps, the
1-client service row alternates with ``/predict?explain=true`` too (the heatmap's cost).

Usage::

    .venv/bin/python benchmarks/bench_service.py [--models DIR] [--requests N]

Images are real radiographs from ../shared/datasets/bone-break-classification when
present, synthetic ones from :mod:`trainer.synth` otherwise. With no model in ``--models``
it says how to train one, or trains a small one on synthetic data with ``--train``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modelio import contract  # noqa: E402
from modelio.artifact import list_versions, read_metadata, version_dir  # noqa: E402
from modelio.images import InputSpec, decode_image, to_array  # noqa: E402
from modelio.locations import DEFAULT_MODEL_NAME  # noqa: E402

REAL_DATA = REPO.parent / "shared/datasets/bone-break-classification"
MODEL = DEFAULT_MODEL_NAME
CONCURRENCY = 8
ROUNDS = 10  # bare and service alternate this many times (see bench_server)
EXPLAIN = "/predict?explain=true"

NAIVE_APP = """
import io, sys
import numpy as np
from fastapi import FastAPI, File, UploadFile
from PIL import Image
import keras

path, height, width, channels = sys.argv[1], *map(int, sys.argv[2:5])
layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
model = keras.Sequential([keras.Input((height, width, channels)), layer])
app = FastAPI()

@app.get("/readyz")
async def readyz():
    return {"status": "ready"}

@app.post("/predict")
async def predict(file: UploadFile = File(...)):
    image = Image.open(io.BytesIO(await file.read())).convert("L" if channels == 1 else "RGB")
    image = image.resize((width, height))
    pixels = np.asarray(image, dtype=np.float32).reshape(1, height, width, channels)
    probs = model.predict(pixels, verbose=0)[PROBABILITIES][0]
    return {"label": int(np.argmax(probs)), "confidence": float(np.max(probs))}

if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[5]), log_level="warning")
"""


@dataclass
class Result:
    name: str
    latencies: list[float]  # seconds, one per request
    wall: float  # seconds for all requests

    @property
    def p50(self) -> float:
        return float(np.percentile(self.latencies, 50)) * 1000

    @property
    def p95(self) -> float:
        return float(np.percentile(self.latencies, 95)) * 1000

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.wall


def load_images(count: int) -> tuple[list[bytes], str]:
    """Real radiographs spread over the classes when present, else synthetic ones."""
    if REAL_DATA.is_dir():
        files = sorted(REAL_DATA.glob("*/Train/*.jpg"))
        step = max(1, len(files) // count)
        return [f.read_bytes() for f in files[::step][:count]], f"real radiographs ({REAL_DATA})"
    from trainer.synth import write_dataset  # noqa: PLC0415

    out = Path(tempfile.mkdtemp(prefix="bench-synth-"))
    write_dataset(out / "data", per_class=max(2, count // 10 + 1), size=256, seed=0)
    files = sorted(p for p in (out / "data").rglob("*") if p.suffix in {".jpg", ".png"})
    return [f.read_bytes() for f in files[:count]], "synthetic radiographs (trainer.synth)"


def find_model(models_dir: Path, train: bool) -> Path:
    versions = list_versions(models_dir, MODEL)
    if versions:
        return version_dir(models_dir, MODEL, versions[-1])
    if not train:
        sys.exit(
            f"No model in {models_dir / MODEL}. Train one first:\n"
            "  .venv/bin/python -m trainer synth --out data/synth\n"
            f"  .venv/bin/python -m trainer train --data data/synth --models {models_dir}\n"
            "or run this script with --train to train a small one on synthetic data."
        )
    from trainer.synth import write_dataset  # noqa: PLC0415
    from trainer.train import TrainConfig, train  # noqa: PLC0415

    data = Path(tempfile.mkdtemp(prefix="bench-train-")) / "data"
    write_dataset(data, per_class=20, size=256, seed=0)
    print(f"training a small model on synthetic data into {models_dir} ...", flush=True)
    train(TrainConfig(data_dir=data, models_dir=models_dir, name=MODEL, epochs=1, seed=0))
    return version_dir(models_dir, MODEL, list_versions(models_dir, MODEL)[-1])


class Bare:
    """The floor: what one request costs with no HTTP at all, in this process."""

    def __init__(self, images: list[bytes], path: Path, spec: InputSpec) -> None:
        from service.runtime import load_predictor  # noqa: PLC0415
        from service.settings import Settings  # noqa: PLC0415

        settings = Settings()  # the runtime and runners the service would use here
        self.images = images
        self.spec = spec
        self.predictor = load_predictor(
            path,
            interpreters=settings.interpreters,
            threads=settings.inference_threads,
            solo_threads=settings.solo_threads,
            runtime=settings.runtime,
            precision=settings.inference_precision,
        )
        self.name = f"bare: decode+resize+{self.predictor.runtime}"
        self.next = 0
        self.run(10)  # warm-up

    def run(self, requests: int) -> tuple[list[float], float]:
        """Latencies of ``requests`` images in turn, and the wall time they took."""
        latencies = []
        start = time.perf_counter()
        for _ in range(requests):
            data = self.images[self.next % len(self.images)]
            self.next += 1
            t = time.perf_counter()
            self.predictor.predict(to_array(decode_image(data), self.spec)[np.newaxis])
            latencies.append(time.perf_counter() - t)
        return latencies, time.perf_counter() - start


def multipart(
    data: bytes, filename: str = "x.jpg", media_type: str = "image/jpeg"
) -> tuple[bytes, str]:
    """A one-file ``multipart/form-data`` body (field ``file``) and its content type."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\nContent-Type: {media_type}\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def http_load(
    port: int,
    bodies: list[tuple[bytes, str]],
    requests: int,
    clients: int,
    path: str = "/predict",
) -> tuple[list[float], float]:
    """``clients`` threads, each on one keep-alive connection, share ``requests`` posts."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))
    errors: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for i in counter:
            body, content_type = bodies[i % len(bodies)]
            t = time.perf_counter()
            conn.request("POST", path, body=body, headers={"Content-Type": content_type})
            response = conn.getresponse()
            payload = response.read()
            mine.append(time.perf_counter() - t)
            if response.status != 200:
                errors.append(f"{response.status} {payload[:200]!r}")
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return latencies, wall


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(port: int, process: subprocess.Popen, timeout: float = 120) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError("server not ready in time")


def rss_mib(pid: int) -> tuple[float, float]:
    """Resident memory now and at its peak (VmRSS, VmHWM), in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return (
        int(fields["VmRSS"].split()[0]) / 1024,
        int(fields["VmHWM"].split()[0]) / 1024,
    )


def run_server(
    command: list[str], env: dict[str, str], port: int, label: str
) -> tuple[subprocess.Popen, float]:
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    started = time.perf_counter()
    try:
        wait_ready(port, process)
    except Exception:
        process.kill()
        raise
    ready = time.perf_counter() - started
    print(f"  {label}: ready {ready:.2f} s after start", flush=True)
    return process, ready


def bench_server(
    label: str,
    start: Callable[[int], tuple[subprocess.Popen, float]],
    bodies: list[tuple[bytes, str]],
    requests: int,
    *,
    bare: Bare | None = None,
    explain: bool = False,
) -> tuple[list[Result], float, tuple[float, float]]:
    """1 client then 8 concurrent clients on a fresh server.

    With ``bare``, the 1-client row is measured in :data:`ROUNDS` short rounds that
    alternate with the bare floor (the server sits idle meanwhile), so that a slow
    minute on a noisy machine hits both sides of the ratio alike; the bare row is
    then returned first. With ``explain`` too, ``/predict?explain=true`` joins the
    alternation, and its row comes last.
    """
    port = free_port()
    process, ready = start(port)
    one_client = f"{label}, 1 client"
    try:
        http_load(port, bodies, 20, 1)  # warm-up
        if bare is None:
            results = [Result(one_client, *http_load(port, bodies, requests, 1))]
        else:
            served, floor = Result(one_client, [], 0.0), Result(bare.name, [], 0.0)
            explained = Result(f"{label} ?explain=true, 1 client", [], 0.0)
            share = requests // ROUNDS
            for _ in range(ROUNDS):
                measures: list[tuple[Result, Callable[[], tuple[list[float], float]]]] = [
                    (floor, lambda: bare.run(share)),
                    (served, lambda: http_load(port, bodies, share, 1)),
                ]
                if explain:
                    measures.append((explained, lambda: http_load(port, bodies, share, 1, EXPLAIN)))
                for row, measure in measures:
                    latencies, wall = measure()
                    row.latencies.extend(latencies)
                    row.wall += wall
            results = [floor, served]
        latencies, wall = http_load(port, bodies, requests, CONCURRENCY)
        results.append(Result(f"{label}, {CONCURRENCY} clients", latencies, wall))
        if bare is not None and explain:
            results.append(explained)
        memory = rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return results, ready, memory


def report(
    *,
    rows: list[Result],
    service_rows: list[Result],
    explain_row: Result | None,
    naive_rows: list[Result],
    service_ready: float,
    service_mem: tuple[float, float],
    naive_mem: tuple[float, float] | None,
    json_path: Path | None,
) -> None:
    """The table, the ratios against the targets, and optionally a JSON copy."""
    bare = rows[0]
    print(f"\n{'':34} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>8}")
    for row in rows:
        print(f"{row.name:34} {row.p50:8.2f} {row.p95:8.2f} {row.throughput:8.1f}")
    one, many = service_rows
    print()
    figures = {
        "bare_p50_ms": bare.p50,
        "service_p50_ms": one.p50,
        "service_over_bare_p50": one.p50 / bare.p50,
        "service_ready_s": service_ready,
        "service_rss_mib": service_mem[0],
        "service_peak_rss_mib": service_mem[1],
        "service_8_clients_rps": many.throughput,
    }
    print(
        f"service p50 / bare p50           {one.p50 / bare.p50:6.2f}x   (target <= 1.3x; "
        f"measured in {ROUNDS} alternating rounds)"
    )
    if explain_row is not None:
        figures |= {
            "explain_p50_ms": explain_row.p50,
            "explain_over_service_p50": explain_row.p50 / one.p50,
        }
        print(f"?explain=true p50 / service p50  {explain_row.p50 / one.p50:6.2f}x")
    if naive_rows:
        n_one, n_many = naive_rows
        figures |= {
            "naive_p50_ms": n_one.p50,
            "naive_over_service_p50": n_one.p50 / one.p50,
            "service_over_naive_rps_8_clients": many.throughput / n_many.throughput,
            "naive_rss_mib": naive_mem[0] if naive_mem else None,
        }
        print(f"naive p50 / service p50          {n_one.p50 / one.p50:6.2f}x   (target >= 5x)")
        print(f"service / naive req/s, 8 clients {many.throughput / n_many.throughput:6.2f}x")
    print(f"service start to ready           {service_ready:6.2f} s   (target <= 5 s)")
    print(f"service resident memory          {service_mem[0]:6.0f} MiB (peak {service_mem[1]:.0f})")
    if naive_mem:
        print(f"naive resident memory            {naive_mem[0]:6.0f} MiB (peak {naive_mem[1]:.0f})")
    if json_path:
        json_path.write_text(json.dumps(figures, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path("models"), help="models folder")
    parser.add_argument("--requests", type=int, default=300, help="requests per measurement")
    parser.add_argument("--images", type=int, default=50, help="distinct images to cycle")
    parser.add_argument("--train", action="store_true", help="train a small model if none")
    parser.add_argument("--skip-naive", action="store_true", help="skip the keras baseline")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    models_dir = args.models.resolve()
    path = find_model(models_dir, args.train)
    metadata = read_metadata(path)
    spec = InputSpec.from_dict(metadata["input"])
    images, source = load_images(args.images)
    bodies = [multipart(data) for data in images]
    cpus = os.cpu_count()
    print(f"model {path} (input {spec.height}x{spec.width}x{spec.channels})")
    print(
        f"images: {len(images)} {source}, mean {statistics.mean(map(len, images)) / 1024:.0f} KiB"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {cpus} CPUs, "
        f"Python {platform.python_version()}; {args.requests} requests per row\n"
    )

    bare = Bare(images, path, spec)
    env = {**os.environ, "BONEFRAC_MODELS_DIR": str(models_dir), "BONEFRAC_RELOAD_INTERVAL_S": "0"}

    def start_service(port: int) -> tuple[subprocess.Popen, float]:
        command = [sys.executable, "-m", "service", "--port", str(port), "--log-level", "warning"]
        return run_server(command, env, port, "service")

    # the outputs block of metadata.json (older versions: their signature's outputs)
    explain = contract.CLASS_MAPS in contract.output_names(metadata)
    rows, service_ready, service_mem = bench_server(
        "service", start_service, bodies, args.requests, bare=bare, explain=explain
    )
    explain_row = rows[-1] if explain else None
    service_rows = rows[1:3]  # rows[0] is the bare floor, measured alongside
    naive_rows: list[Result] = []
    naive_mem = None
    if not args.skip_naive:
        script = Path(tempfile.mkdtemp(prefix="bench-naive-")) / "naive_app.py"
        script.write_text(NAIVE_APP.replace("PROBABILITIES", repr(contract.PROBABILITIES)))

        def start_naive(port: int) -> tuple[subprocess.Popen, float]:
            command = [
                sys.executable,
                str(script),
                str(path),
                str(spec.height),
                str(spec.width),
                str(spec.channels),
                str(port),
            ]
            return run_server(command, {**env, "TF_CPP_MIN_LOG_LEVEL": "3"}, port, "naive")

        naive_requests = max(50, args.requests // 3)
        naive_rows, _, naive_mem = bench_server(
            "naive keras predict()", start_naive, bodies, naive_requests
        )
        rows += naive_rows

    report(
        rows=rows,
        service_rows=service_rows,
        explain_row=explain_row,
        naive_rows=naive_rows,
        service_ready=service_ready,
        service_mem=service_mem,
        naive_mem=naive_mem,
        json_path=args.json,
    )


if __name__ == "__main__":
    main()
