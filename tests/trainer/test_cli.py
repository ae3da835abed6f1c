"""The command line as a user meets it: synth, train twice, evaluate; and every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelio import artifact
from trainer import export
from trainer.cli import main

TINY = ["--image-size", "32", "--epochs", "1", "--quiet"]


@pytest.mark.slow  # measured 15-60 s on 2 busy cores: out of the fast lane
def test_synth_train_train_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, models = tmp_path / "data", tmp_path / "models"
    assert main(["synth", "--out", str(data), "--per-class", "6", "--size", "64"]) == 0
    assert main(["train", "--data", str(data), "--models", str(models), *TINY]) == 0
    assert main(["train", "--data", str(data), "--models", str(models), *TINY]) == 0
    assert artifact.list_versions(models, "bone-fracture") == [1, 2]
    capsys.readouterr()

    version = models / "bone-fracture" / "2"
    out = tmp_path / "report"
    code = main(
        ["evaluate", "--model", str(version), "--data", str(data), "--out", str(out), "--json"]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "test"
    assert result["version"] == 2
    assert result["samples"] == sum(1 for _ in data.rglob("Test/*.*"))
    assert 0 <= result["accuracy"] <= result["top3_accuracy"] <= 1
    assert set(result["per_class"]) == set(
        json.loads((version / "metadata.json").read_text())["classes"]
    )
    for name in ("classification_report.json", "confusion_matrix.png"):
        assert (out / name).is_file()


def _two_class_folder(root: Path, per_class: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(
                root / name / f"{k}.png"
            )
    return root


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda tmp: ["--data", str(tmp / "nope")], "does not exist"),
        (lambda tmp: ["--data", str(tmp)], "no images found"),
        (
            lambda tmp: [
                "--data",
                str(_two_class_folder(tmp / "d", per_class=12)),
                "--models",
                str(tmp / "d" / "a" / "0.png" / "models"),
            ],
            "cannot write models",
        ),
        (lambda tmp: ["--data", str(_two_class_folder(tmp / "d"))], "too few distinct images"),
        (
            lambda tmp: ["--data", str(tmp), "--tune", "--backbone", "MobileNetV2"],
            "plain CNN only",
        ),
    ],
)
def test_bad_training_input_gives_one_line_and_nonzero_exit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup, message: str
) -> None:
    args = setup(tmp_path)
    if "--models" not in args:
        args += ["--models", str(tmp_path / "models")]
    assert main(["train", *args, *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1
    assert err.startswith("error: ")
    models = tmp_path / "models" / "bone-fracture"
    if "cannot write" not in message:  # data problems are found before anything is made
        assert not models.exists()


def test_synth_refuses_non_empty_target(tmp_path: Path, capsys) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["synth", "--out", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_evaluate_refuses_a_folder_that_is_not_a_version(tmp_path: Path, capsys) -> None:
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert "not a model version" in capsys.readouterr().err


def _fake_model_export(monkeypatch: pytest.MonkeyPatch, fail: bool) -> None:
    def write_saved_model(model, spec, path: Path) -> None:
        (path / "saved_model.pb").write_bytes(b"model")

    def write_tflite(saved_model: Path, target: Path, probe) -> dict[str, float]:
        if fail:
            raise RuntimeError("converter crashed")
        target.write_bytes(b"tflite")
        return {"probabilities": 0.0}

    monkeypatch.setattr(export, "_write_saved_model", write_saved_model)
    monkeypatch.setattr(export, "_write_tflite", write_tflite)


def _export(models: Path) -> Path:
    from modelio.images import InputSpec

    return export.export_version(
        object(),
        models_dir=models,
        name="m",
        classes=["a", "b"],
        spec=InputSpec(8, 8, 1),
        metadata={},
        probe=np.zeros((1, 8, 8, 1), np.float32),
    )


def test_a_single_output_model_declares_the_probabilities_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelio import contract

    _fake_model_export(monkeypatch, fail=False)
    metadata = json.loads((_export(tmp_path) / "metadata.json").read_text())
    assert metadata["outputs"] == contract.outputs_block(2)
    assert contract.output_names(metadata) == (contract.PROBABILITIES,)


def test_failed_export_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_model_export(monkeypatch, fail=True)
    with pytest.raises(RuntimeError):
        _export(tmp_path)
    assert list((tmp_path / "m").iterdir()) == []


def test_export_never_overwrites_a_version_that_appeared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_model_export(monkeypatch, fail=False)
    assert _export(tmp_path).name == "1"
    (tmp_path / "m" / "2").mkdir()
    (tmp_path / "m" / "2" / "other-writer").write_text("x")
    monkeypatch.setattr(artifact, "list_versions", lambda *_: [1])  # a stale view: 2 appears
    third = _export(tmp_path)
    assert third.name == "3"
    assert json.loads((third / "metadata.json").read_text())["version"] == 3
    assert (tmp_path / "m" / "2" / "other-writer").read_text() == "x"
    assert not list((tmp_path / "m").glob(".staging-*"))


def test_concurrent_exports_get_distinct_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _fake_model_export(monkeypatch, fail=False)
    with ThreadPoolExecutor(4) as pool:
        names = sorted(int(p.name) for p in pool.map(lambda _: _export(tmp_path), range(8)))
    assert names == list(range(1, 9))


@pytest.mark.slow  # measured 15-60 s on 2 busy cores: out of the fast lane
def test_tune_records_the_search(synthetic_dataset: Path, tmp_path: Path) -> None:
    args = [
        "train",
        "--data",
        str(synthetic_dataset),
        "--models",
        str(tmp_path),
        "--tune",
        "--max-trials",
        "2",
        *TINY,
    ]
    assert main(args) == 0
    metadata = json.loads((tmp_path / "bone-fracture" / "1" / "metadata.json").read_text())
    search = metadata["hyperparameters"]["search"]
    assert search["tuner"] == "keras_tuner.RandomSearch"
    assert len(search["trials"]) == 2
    best = min(search["trials"], key=lambda trial: trial["val_loss"])
    for key, value in best["hyperparameters"].items():
        assert metadata["hyperparameters"][key] == value  # the exported model used the best


def test_unknown_backbone_is_refused_before_any_image_is_decoded(
    synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from trainer import data

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded images before checking the backbone")

    monkeypatch.setattr(data, "load", no_decoding)
    models = tmp_path / "models"
    args = ["--data", str(synthetic_dataset), "--models", str(models), "--backbone", "NoSuchNet"]

    assert main(["train", *args]) == 2

    assert "unknown --backbone 'NoSuchNet'" in capsys.readouterr().err
    assert not models.exists()


def test_train_and_assemble_take_the_model_place_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BONEFRAC_MODEL_NAME and BONEFRAC_MODELS_DIR mean to the trainer what they mean to
    the service; flags still win."""
    import trainer.assemble
    import trainer.train

    seen: list[tuple[object, ...]] = []
    monkeypatch.setattr(trainer.train, "train", lambda c: seen.append((c.models_dir, c.name)))
    monkeypatch.setattr(
        trainer.assemble, "assemble", lambda src, models, name: seen.append((models, name))
    )
    monkeypatch.setattr(trainer.assemble, "describe", str)
    monkeypatch.setenv("BONEFRAC_MODELS_DIR", str(tmp_path / "env-models"))
    monkeypatch.setenv("BONEFRAC_MODEL_NAME", "wrist")
    data = ["--data", str(tmp_path)]

    assert main(["train", *data]) == 0
    assert main(["train", *data, "--models", "flag-models", "--name", "elbow"]) == 0
    assert main(["assemble"]) == 0
    monkeypatch.delenv("BONEFRAC_MODEL_NAME")
    assert main(["assemble"]) == 0  # the shipped model's own name

    assert seen == [
        (tmp_path / "env-models", "wrist"),
        (Path("flag-models"), "elbow"),
        (tmp_path / "env-models", "wrist"),
        (tmp_path / "env-models", None),
    ]


def test_a_failed_training_leaves_no_empty_model_folder(
    synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer import train as train_module

    def crash(*args, **kwargs):
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(train_module, "fit", crash)
    models = tmp_path / "models"
    with pytest.raises(RuntimeError):
        main(["train", "--data", str(synthetic_dataset), "--models", str(models), *TINY])
    assert list(models.iterdir()) == []


def test_evaluate_of_a_missing_version_answers_without_tensorflow(tmp_path: Path) -> None:
    """The check comes before TensorFlow's seconds-long start-up, so it is immediate."""
    script = (
        "import sys\n"
        "from trainer.cli import main\n"
        f"code = main(['evaluate', '--model', '/nonexistent/1', '--data', {str(tmp_path)!r}])\n"
        "assert 'tensorflow' not in sys.modules, 'imported TensorFlow first'\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 2, result.stderr
    assert "not a model version" in result.stderr


def test_synth_into_an_unwritable_place_names_the_users_folder(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    assert main(["synth", "--out", str(blocker / "data"), "--per-class", "2"]) == 2

    err = capsys.readouterr().err
    assert f"cannot create {blocker / 'data'}" in err
    assert ".partial" not in err
