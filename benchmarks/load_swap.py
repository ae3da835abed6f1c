"""Load and swap: concurrent /predict requests while versions come and go (loopback only).

Starts ``python -m service`` on a free 127.0.0.1 port over a private copy of a models
folder, then sends ``--requests`` predictions from ``--clients`` keep-alive connections
while a second thread publishes new versions (copied to a hidden staging folder, then
renamed into place, as the trainer's exporter does) and deletes old ones. It stops by
itself after the requests or ``--max-seconds``, whichever comes first, and prints
throughput, latency percentiles, failed requests (must be 0) and the service's resident
memory before and after. Exit status 1 when any request failed.

    .venv/bin/python benchmarks/load_swap.py --models models --requests 3000 --clients 4
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_service import free_port, multipart, rss_mib  # the sibling benchmark

REPO = Path(__file__).resolve().parents[1]
DATASET = REPO.parent / "shared/datasets/bone-break-classification"


@dataclass
class Tally:
    """What the clients saw, shared between their threads under one lock."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    versions: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0


def sample_images(count: int = 20) -> list[bytes]:
    """Real radiographs when the shared dataset is present, else synthetic gray PNGs."""
    real = sorted(DATASET.glob("*/Train/*.jpg"))[:count] if DATASET.is_dir() else []
    if real:
        return [path.read_bytes() for path in real]
    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        pixels = rng.integers(0, 255, (384, 320), dtype=np.uint8)
        Image.fromarray(pixels, "L").save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def client(
    port: int, bodies: list[tuple[bytes, str]], tally: Tally, total: int, deadline: float
) -> None:
    """One keep-alive connection sending predictions until the shared count or time is up."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    index = 0
    while time.monotonic() < deadline:
        with tally.lock:
            if tally.sent >= total:
                break
            tally.sent += 1
        body, content_type = bodies[index % len(bodies)]
        index += 1
        start = time.perf_counter()
        try:
            conn.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
            response = conn.getresponse()
            payload = response.read()
            elapsed = time.perf_counter() - start
        except (OSError, http.client.HTTPException) as exc:
            with tally.lock:
                tally.failures.append(f"{type(exc).__name__}: {exc}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        with tally.lock:
            if response.status != 200:
                tally.failures.append(f"{response.status}: {payload[:200]!r}")
                continue
            tally.latencies.append(elapsed)
            version = int(payload.split(b'"version":', 1)[1].split(b",", 1)[0])
            tally.versions[version] = tally.versions.get(version, 0) + 1
    conn.close()


def served_version(port: int) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/readyz")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            return None
        return int(body.split(b'"version":', 1)[1].split(b"}", 1)[0])
    finally:
        conn.close()


def swapper(root: Path, port: int, stop: threading.Event, interval: float, log: list[str]) -> None:
    """Publish version N+1 (staged, then renamed), wait until it is served, delete the
    oldest; repeat every ``interval`` seconds until told to stop."""
    while not stop.wait(interval):
        versions = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())
        newest = versions[-1]
        staging = root / f".staging-{newest + 1}-{uuid.uuid4().hex[:6]}"
        shutil.copytree(root / str(newest), staging)
        staging.rename(root / str(newest + 1))
        published = time.monotonic()
        while served_version(port) != newest + 1:
            if stop.wait(0.05):
                return  # the load is over; this swap was not timed
            if time.monotonic() - published > 30:
                log.append(f"version {newest + 1} not served within 30 s")
                return
        swap_s = time.monotonic() - published
        if len(versions) >= 2:
            shutil.rmtree(root / str(versions[0]))
        log.append(f"v{newest + 1} served after {swap_s:.2f} s; removed v{versions[0]}")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=REPO / "models", help="models folder")
    parser.add_argument("--name", default="bone-fracture", help="model name")
    parser.add_argument("--requests", type=int, default=3000, help="predictions to send")
    parser.add_argument("--clients", type=int, default=4, help="concurrent connections")
    parser.add_argument("--swap-every", type=float, default=1.0, help="seconds between swaps")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop after this")
    args = parser.parse_args(argv)

    source = args.models / args.name
    if not any(p.name.isdigit() for p in source.iterdir()):
        parser.error(f"{source} holds no version")
    with tempfile.TemporaryDirectory(prefix="load-swap-") as tmp:
        models = Path(tmp) / "models"
        newest = max((p for p in source.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        shutil.copytree(newest, models / args.name / "1")
        port = free_port()
        env = {
            **os.environ,
            "BONEFRAC_MODELS_DIR": str(models),
            "BONEFRAC_MODEL_NAME": args.name,
            "BONEFRAC_RELOAD_INTERVAL_S": "0.2",
            "BONEFRAC_LOG_LEVEL": "warning",
        }
        env.pop("BONEFRAC_API_KEY", None)
        env.pop("BONEFRAC_MODEL_VERSION", None)
        service = subprocess.Popen(
            [sys.executable, "-m", "service", "--port", str(port), "--log-level", "warning"],
            cwd=REPO,
            env=env,
        )
        try:
            return run(args, service, port, models / args.name)
        finally:
            service.terminate()
            service.wait(timeout=15)


def run(args: argparse.Namespace, service: subprocess.Popen, port: int, root: Path) -> int:
    started = time.monotonic()
    while served_version_or_none(port) is None:
        if service.poll() is not None or time.monotonic() - started > 60:
            print("the service did not become ready", file=sys.stderr)
            return 1
        time.sleep(0.2)
    bodies = [multipart(image, "x", "application/octet-stream") for image in sample_images()]
    warm = Tally()
    client(port, bodies, warm, 50, time.monotonic() + 30)  # first requests, then measure
    rss_before = rss_mib(service.pid)[0]

    tally = Tally()
    stop = threading.Event()
    swaps: list[str] = []
    deadline = time.monotonic() + args.max_seconds
    swap_thread = threading.Thread(
        target=swapper, args=(root, port, stop, args.swap_every, swaps), daemon=True
    )
    threads = [
        threading.Thread(target=client, args=(port, bodies, tally, args.requests, deadline))
        for _ in range(args.clients)
    ]
    start = time.perf_counter()
    swap_thread.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    stop.set()
    swap_thread.join(timeout=60)
    rss_after = rss_mib(service.pid)[0]

    done = len(tally.latencies)
    print(f"requests: {done} answered, {len(tally.failures)} failed, in {elapsed:.1f} s")
    print(f"throughput: {done / elapsed:.1f} req/s with {args.clients} clients")
    print(
        f"latency ms: p50 {percentile(tally.latencies, 50):.2f}  "
        f"p95 {percentile(tally.latencies, 95):.2f}  p99 {percentile(tally.latencies, 99):.2f}  "
        f"max {max(tally.latencies, default=0) * 1000:.2f}  "
        f"mean {statistics.fmean(tally.latencies) * 1000 if done else float('nan'):.2f}"
    )
    print(f"swaps: {sum('served after' in s for s in swaps)} ({'; '.join(swaps[-3:])})")
    if tally.versions:
        print(
            f"answers came from {len(tally.versions)} versions "
            f"(v{min(tally.versions)} to v{max(tally.versions)})"
        )
    print(f"service resident memory: {rss_before:.0f} MiB before, {rss_after:.0f} MiB after")
    for failure in tally.failures[:10]:
        print(f"  failed: {failure}")
    problems = [s for s in swaps if "not served" in s]
    return 1 if tally.failures or problems else 0


def served_version_or_none(port: int) -> int | None:
    try:
        return served_version(port)
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
