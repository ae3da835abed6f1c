"""Evaluation reports: written whole or not at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer import evaluate

CLASSES = ["a", "b", "c"]


def _metrics() -> dict:
    labels = np.array([0, 1, 2, 2])
    probabilities = np.eye(3)[[0, 1, 1, 2]] * 0.8 + 0.2 / 3
    return evaluate.compute_metrics(labels, probabilities, CLASSES)


def test_reports_replace_the_previous_ones_whole(tmp_path: Path) -> None:
    target = tmp_path / "version" / "reports" / "evaluation"
    evaluate.write_reports_atomically(target, _metrics(), CLASSES)
    (target / "stale.txt").write_text("from an older evaluation")

    evaluate.write_reports_atomically(target, _metrics(), CLASSES)

    assert (target / evaluate.CLASSIFICATION_REPORT).is_file()
    assert not (target / "stale.txt").exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["evaluation"]


def test_a_failed_write_leaves_the_previous_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "evaluation"
    evaluate.write_reports_atomically(target, _metrics(), CLASSES)
    before = (target / evaluate.CLASSIFICATION_REPORT).read_text()

    def half_then_fail(out_dir: Path, *args: object, **kwargs: object) -> None:
        out_dir.mkdir(parents=True)
        (out_dir / evaluate.CLASSIFICATION_REPORT).write_text("{half")
        raise OSError("No space left on device")

    monkeypatch.setattr(evaluate, "write_reports", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        evaluate.write_reports_atomically(target, _metrics(), CLASSES)

    assert (target / evaluate.CLASSIFICATION_REPORT).read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evaluation"]
