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
import datetime as dt
import http.client
import os
import subprocess
import sys
import tempfile
import time
import uuid
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
from prometheus_client import CollectorRegistry  # noqa: E402

from service.records.db import make_engine, migrate, resolve_url  # noqa: E402
from service.records.log import Entry, PredictionLog  # noqa: E402
from service.records.metrics import RecordsMetrics  # noqa: E402
from service.records.reviews import count_rows  # noqa: E402
from service.schemas import ClassProbability, Prediction, PredictionWarning  # noqa: E402


def writer_cost(image: bytes, url: str | None, answers: int = 2000) -> str:
    """In process: what one answer costs the request path (the hand-over) and the
    writer thread (hash, serialise, insert), without the noise of HTTP and the model."""
    classes = [f"class {i}" for i in range(10)]
    answer = Prediction(
        model=MODEL,
        version=1,
        label=classes[0],
        confidence=0.4,
        probabilities=[ClassProbability(label=c, probability=0.1) for c in classes],
        warnings=[PredictionWarning(code="low_confidence", message="x" * 120)],
        ood_score=0.5,
    )
    engine = make_engine(resolve_url(Path(tempfile.mkdtemp(prefix="bench-writer-")), url))
    migrate(engine)
    log = PredictionLog(
        engine, RecordsMetrics(CollectorRegistry()), queue_size=answers, store_images=False
    )
    now = dt.datetime.now(dt.UTC)
    entries = [
        Entry(str(uuid.uuid4()), now, "/predict", MODEL, 1, "bench", image, None, answer, 0.01)
        for _ in range(answers)
    ]
    cpu, wall = time.process_time(), time.perf_counter()
    for entry in entries:
        log.submit(entry)
    handed = (time.perf_counter() - wall) / answers * 1e6
    log.start()
    log.flush(300)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    log.close()
    engine.dispose()
    return (
        f"hand-over {handed:.1f} us/answer on the request path; writer "
        f"{cpu / answers * 1e3:.3f} ms CPU/answer, {answers / wall:.0f} answers/s"
    )


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
    parser.add_argument(
        "--control",
        action="store_true",
        help="A/A run: the 'log on' service does not log either (the noise floor)",
    )
    args = parser.parse_args()

    version = find_model(args.models, args.train)
    images, source = load_images(64)
    bodies = [multipart(image) for image in images]
    records = Path(tempfile.mkdtemp(prefix="bench-records-"))
    ports = {"log on": free_port(), "log off": free_port()}
    processes = {
        "log on": start(args.models, ports["log on"], not args.control, records, args.database_url),
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

        rows, dropped = drained_rows(ports["log on"], answered, records, args)
    finally:
        for process in processes.values():
            process.terminate()
            process.wait(30)

    report(args, version, source, results, images[0])
    if not args.control:
        print(
            f"rows written {rows} = answers given {answered}: {rows == answered} "
            f"(dropped {int(dropped)})"
        )


def drained_rows(
    port: int, answered: int, records: Path, args: argparse.Namespace
) -> tuple[int, float]:
    """(rows in the database, answers counted as dropped) once the log has caught up."""
    if args.control:
        return 0, 0.0
    deadline = time.monotonic() + 120
    dropped = 0.0
    while time.monotonic() < deadline:
        written = metric(port, "bonefrac_prediction_log_written_total")
        dropped = metric(port, "bonefrac_prediction_log_dropped_total")
        if written + dropped >= answered:
            break
        time.sleep(0.2)
    engine = make_engine(resolve_url(records, args.database_url))
    rows = count_rows(engine)[0]
    engine.dispose()
    return rows, dropped


def report(
    args: argparse.Namespace, version: Path, source: str, results: dict[str, Result], image: bytes
) -> None:
    """The table: latency and throughput with the log off and on, and their ratio."""
    on, off = results["log on"], results["log off"]
    print(f"model: {version} · images: {source} · {args.clients} clients")
    print(f"database: {'PostgreSQL' if args.database_url else 'SQLite (WAL)'}")
    print(f"{'':10} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>8} {'requests':>9}")
    for result in (off, on):
        print(
            f"{result.name:10} {result.p50:8.2f} {result.p95:8.2f} "
            f"{result.throughput:8.1f} {len(result.latencies):9d}"
        )
    print(f"writer alone ({len(image)} B image): {writer_cost(image, args.database_url)}")
    ratio = on.throughput / off.throughput
    print(f"log on / off: p50 x{on.p50 / off.p50:.3f}, throughput x{ratio:.3f} (goal: within 5 %)")


if __name__ == "__main__":
    main()
