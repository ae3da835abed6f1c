"""Cross-validation folds hold out whole near-duplicate groups; the command reports spread."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelio.images import InputSpec
from trainer import data
from trainer.cli import main
from trainer.crossval import grouped_folds


def test_folds_are_disjoint_grouped_and_cover_everything(duplicated_dataset: Path) -> None:
    loaded = data.load(data.discover(duplicated_dataset), InputSpec(16, 16, 1))
    assert loaded.groups_merged >= 24  # the families of near-duplicates are really there
    folds = grouped_folds(loaded, folds=4, val_fraction=0.2, seed=0)
    held_out = np.sort(np.concatenate([split.test for split in folds]))
    np.testing.assert_array_equal(held_out, np.arange(len(loaded.labels)))
    for split in folds:
        test_groups = set(loaded.groups[split.test].tolist())
        assert not test_groups & set(loaded.groups[split.train].tolist())
        assert not test_groups & set(loaded.groups[split.val].tolist())
        assert not set(loaded.groups[split.train].tolist()) & set(loaded.groups[split.val].tolist())


@pytest.mark.slow  # measured 15-60 s on 2 busy cores: out of the fast lane
def test_crossval_command(
    synthetic_dataset: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # where a stray models/ folder would appear
    args = [
        "crossval",
        "--data",
        str(synthetic_dataset),
        "--folds",
        "2",
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--quiet",
        "--json",
    ]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["folds"] == 2
    assert sum(row["samples"] for row in result["per_fold"]) == result["images"] == 80
    for key in ("accuracy", "top3_accuracy", "macro_f1", "tta_accuracy", "tta_macro_f1"):
        assert 0 <= result["summary"][key]["mean"] <= 1
        assert result["summary"][key]["std"] >= 0
    assert not any(tmp_path.iterdir())  # nothing exported


def test_unknown_recipe_is_a_one_line_error(synthetic_dataset: Path, capsys) -> None:
    assert main(["crossval", "--data", str(synthetic_dataset), "--recipe", "magic"]) == 2
    assert "unknown recipe" in capsys.readouterr().err
