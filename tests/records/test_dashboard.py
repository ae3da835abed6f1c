"""The Grafana dashboard asks only for metrics, and labels, the service really exposes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.records_standins import png

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "bonefrac.json"
METRIC = re.compile(r"\b(bonefrac_[a-z0-9_]+)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!=|!~|=)\s*\"")


@pytest.fixture
def database_url() -> None:
    """SQLite only: the exposition does not depend on the database."""
    return


def _exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    return exprs


def _exposed(start_app: Callable) -> dict[str, set[str]]:
    """Sample name -> label names, from /metrics after two answers (one unfamiliar) and
    a review."""
    client = start_app()
    dark = client.post("/predict", files={"file": ("d.png", png(5), "image/png")}).json()
    assert any(w["code"] == "unfamiliar_image" for w in dark["warnings"])
    answer = client.post("/predict", files={"file": ("x.png", png(200), "image/png")}).json()
    review = {"prediction_id": answer["prediction_id"], "finding": "fracture", "reader": "r"}
    assert client.post("/feedback", json={**review, "fracture_type": answer["label"]}).is_success
    exposed: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            exposed.setdefault(sample.name, set()).update(sample.labels)
    return exposed


def test_every_query_names_exposed_metrics_and_labels(start_app: Callable) -> None:
    exposed = _exposed(start_app)
    problems = []
    for expr in _exprs():
        names = set(METRIC.findall(expr))
        unknown = names - set(exposed)
        if unknown:
            problems.append(f"{expr}: no such metric {sorted(unknown)}")
            continue
        labels = set().union(*(exposed[name] for name in names))
        used = {m.strip() for group in GROUPING.findall(expr) for m in group.split(",")}
        used |= set(MATCHER.findall(expr))
        missing = {label for label in used if label} - labels
        if missing:
            problems.append(f"{expr}: labels {sorted(missing)} not on {sorted(names)}")
    assert not problems, "\n".join(problems)


def test_the_dashboard_covers_what_monitoring_needs() -> None:
    text = " ".join(_exprs())
    for metric in (
        "bonefrac_answers_total",
        "bonefrac_unfamiliar_answers_total",
        "bonefrac_findings_total",
        "bonefrac_review_verdicts_total",
        "bonefrac_prediction_log_dropped_total",
        "bonefrac_records_database_up",
    ):
        assert metric in text
