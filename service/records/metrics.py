"""Prometheus instruments of the records: what was answered, what readers said, and
whether the prediction log keeps up. Registered on the app's own registry (no global
state), next to :class:`service.metrics.Metrics`.

Counted in this process from its start, as Prometheus counters are: with several
replicas, sum over them (``sum by (version) (...)``). Answers are counted whether or not
the log is on; reviews are counted by the replica that received them.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

#: Why an answer goes unrecorded (the label of bonefrac_prediction_log_dropped_total).
DROP_REASONS = ("queue_full", "rejected", "shutdown")


class RecordsMetrics:
    """Monitoring of answers and reviews, and the prediction log's health."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.answers = Counter(
            "bonefrac_answers",
            "Images answered, by model and version.",
            ("model", "version"),
            registry=registry,
        )
        self.unfamiliar = Counter(
            "bonefrac_unfamiliar_answers",
            "Answers with an unfamiliar_image warning (unlike the training radiographs).",
            ("model", "version"),
            registry=registry,
        )
        self.findings = Counter(
            "bonefrac_findings",
            "Answers by fracture finding (fracture, no_fracture, uncertain; none for a "
            "model without a fracture head).",
            ("model", "version", "finding"),
            registry=registry,
        )
        self.reviews = Counter(
            "bonefrac_review_verdicts",
            "Readers' verdicts on an answer: aspect 'finding' or 'type', the model's answer "
            "(label), and whether the reader agreed.",
            ("model", "version", "aspect", "label", "outcome"),
            registry=registry,
        )
        self.log_written = Counter(
            "bonefrac_prediction_log_written",
            "Answers written to the prediction log.",
            registry=registry,
        )
        self.log_dropped = Counter(
            "bonefrac_prediction_log_dropped",
            "Answers not recorded: queue_full (the log cannot keep up or the database is "
            "down), rejected (the database refused the row), shutdown (still queued when "
            "the service stopped with the database down).",
            ("reason",),
            registry=registry,
        )
        self.log_errors = Counter(
            "bonefrac_prediction_log_write_errors",
            "Failed attempts to write to the records database (each is retried).",
            registry=registry,
        )
        self.database_up = Gauge(
            "bonefrac_records_database_up",
            "1 when the last write to the records database succeeded, 0 while it fails.",
            registry=registry,
        )
        self.queued = Gauge(
            "bonefrac_prediction_log_queued",
            "Answers waiting to be written to the prediction log.",
            registry=registry,
        )
        self.database_up.set(1)
        for reason in DROP_REASONS:  # exposed at 0 from the start: rate() then reads 0
            self.log_dropped.labels(reason)

    def watch_queue(self, depth: Callable[[], float]) -> None:
        """Read the queue's depth at scrape time (nothing to update per answer)."""
        self.queued.set_function(depth)
