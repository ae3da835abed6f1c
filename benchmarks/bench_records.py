"""What the prediction log costs: ``/predict`` with the log on and off, in one run.

Two ``python -m service`` processes serve the same model, one recording every answer
(SQLite in a temporary folder, or ``--database-url``), one with
``BONEFRAC_PREDICTION_LOG=false``. Eight clients (keep-alive connections) post real
radiographs to one, then the other, in alternating rounds, so the machine's noise hits
both sides alike. Prints p50/p95 latency and throughput of each, their ratio (goal:
within 5 %), and checks that no answer was lost: once the log has drained, the rows in
the database equal the answers the recording service gave.

Usage::

    .venv/bin/python benchmarks/bench_records.py --models DIR [--seconds 60]
        [--clients 8] [--rounds 6] [--database-url postgresql://...]

``DIR`` holds ``bone-fracture/<N>/`` (``python -m trainer assemble --models DIR`` puts the
shipped model there); ``--train`` trains a small one on synthetic data instead.
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

from bench_service import (  # noqa: E402
    MODEL,
    Result,
    find_model,
    free_port,
    http_load,
    load_images,
    multipart,
    wait_ready,
)

from service.records.db import make_engine, resolve_url  # noqa: E402
from service.records.reviews import count_rows  # noqa: E402


def start(
    models: Path, port: int, log_on: bool, records: Path, url: str | None
) -> subprocess.Popen:
    env = {
        **os.environ,
        "BONEFRAC_MODELS_DIR": str(models),
        "BONEFRAC_MODEL_NAME": MODEL,
        "BONEFRAC_RELOAD_INTERVAL_S": "0",
        "BONEFRAC_PREDICTION_LOG": "true" if log_on else "false",
        "BONEFRAC_RECORDS_DIR": str(records),
        "BONEFRAC_LOG_LEVEL": "warning",
    }
    env.pop("BONEFRAC_API_KEY", None)
    env.pop("BONEFRAC_DATABASE_URL", None)
    if url:
        env["BONEFRAC_DATABASE_URL"] = url
    command = [sys.executable, "-m", "service", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, cwd=REPO, env=env)
    wait_ready(port, process)
    return process


def metric(port: int, name: str) -> float:
    """One sample of the service's /metrics (0 when absent)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.split()[-1])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=REPO / "models")
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured time in total")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6, help="alternations of on and off")
    parser.add_argument("--database-url", help="record into this database instead of SQLite")
    args = parser.parse_args()

    version = find_model(args.models, args.train)
    images, source = load_images(64)
    bodies = [multipart(image) for image in images]
    records = Path(tempfile.mkdtemp(prefix="bench-records-"))
    ports = {"log on": free_port(), "log off": free_port()}
    processes = {
        "log on": start(args.models, ports["log on"], True, records, args.database_url),
        "log off": start(args.models, ports["log off"], False, records / "unused", None),
    }
    answered = 0
    try:
        for name, port in ports.items():  # warm-up, and a rate to size the rounds
            latencies, wall = http_load(port, bodies, 8 * args.clients, args.clients)
            answered += len(latencies) if name == "log on" else 0
        rate = len(latencies) / wall
        per_round = max(args.clients, int(rate * args.seconds / (2 * args.rounds)))
        results = {name: Result(name, [], 0.0) for name in ports}
        for round_index in range(args.rounds):
            order = list(ports) if round_index % 2 == 0 else list(reversed(ports))
            for name in order:
                latencies, wall = http_load(ports[name], bodies, per_round, args.clients)
                results[name].latencies.extend(latencies)
                results[name].wall += wall
                answered += len(latencies) if name == "log on" else 0

        port = ports["log on"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            written = metric(port, "bonefrac_prediction_log_written_total")
            dropped = metric(port, "bonefrac_prediction_log_dropped_total")
            if written + dropped >= answered:
                break
            time.sleep(0.2)
        url = resolve_url(records, args.database_url)
        engine = make_engine(url)
        rows = count_rows(engine)[0]
        engine.dispose()
    finally:
        for process in processes.values():
            process.terminate()
            process.wait(30)

    on, off = results["log on"], results["log off"]
    print(f"model: {version} · images: {source} · {args.clients} clients")
    print(f"database: {'PostgreSQL' if args.database_url else 'SQLite (WAL)'}")
    print(f"{'':10} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>8} {'requests':>9}")
    for result in (off, on):
        print(
            f"{result.name:10} {result.p50:8.2f} {result.p95:8.2f} "
            f"{result.throughput:8.1f} {len(result.latencies):9d}"
        )
    ratio = on.throughput / off.throughput
    print(f"log on / off: p50 x{on.p50 / off.p50:.3f}, throughput x{ratio:.3f} (goal: within 5 %)")
    print(
        f"rows written {rows} = answers given {answered}: {rows == answered} "
        f"(dropped {int(dropped)})"
    )


if __name__ == "__main__":
    main()
