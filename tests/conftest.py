"""Session-wide fixtures: a tiny exported model every service and UI test can serve.

Model artefacts are expensive (TensorFlow import, export, TFLite conversion), so they are
made once per test session and treated as read-only; a test that changes a models folder
copies it first (see ``models_copy``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.loopback import free_port, stop, wait_until_ok

MODEL_NAME = "bone-fracture"
REPO = Path(__file__).resolve().parents[1]
SERVICE_START_TIMEOUT = 120.0
TINY_SIZE = 32
#: The real Kaggle dataset: ``BONEFRAC_TEST_DATA`` when set, else the shared folder beside
#: the checkout.
REAL_DATA = Path(
    os.environ.get("BONEFRAC_TEST_DATA", "").strip()
    or REPO.parent / "shared/datasets/bone-break-classification"
)


@pytest.fixture(scope="session", autouse=True)
def records_elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The services the tests start keep their records (prediction log, reviews) in a
    temporary folder, never in the checkout's ``records/``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BONEFRAC_RECORDS_DIR", str(tmp_path_factory.mktemp("records")))
        yield


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset in the Kaggle layout (ten classes, Train/Test)."""
    from trainer.synth import write_dataset

    out = tmp_path_factory.mktemp("synthetic") / "Bone Break Classification"
    write_dataset(out, per_class=8, size=96, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory, synthetic_dataset: Path) -> Path:
    """A models folder holding ``bone-fracture/1``, trained one epoch by the trainer itself."""
    from trainer.train import TrainConfig, train

    models = tmp_path_factory.mktemp("models")
    train(
        TrainConfig(
            data_dir=synthetic_dataset,
            models_dir=models,
            name=MODEL_NAME,
            epochs=1,
            image_size=TINY_SIZE,
            seed=0,
            verbose=0,
        )
    )
    return models


@pytest.fixture(scope="session")
def shipped_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m trainer assemble`` of default-model/ into a fresh models folder, as
    ``run.sh`` does (about a minute; read-only, shared by the slow tests)."""
    from trainer.cli import main

    models = tmp_path_factory.mktemp("shipped-models")
    assert main(["assemble", "--from", str(REPO / "default-model"), "--models", str(models)]) == 0
    return models


@pytest.fixture
def models_copy(tiny_models_dir: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the session's models folder."""
    target = tmp_path / "models"
    shutil.copytree(tiny_models_dir, target)
    return target


@pytest.fixture(scope="session")
def real_dataset() -> Path:
    """The real Kaggle training split, when the shared folder is present."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real dataset not present at {REAL_DATA} (set BONEFRAC_TEST_DATA)")
    return REAL_DATA


#: FracAtlas (fractured and intact bones with outlines): ``BONEFRAC_TEST_FRACATLAS`` when
#: set, else the shared folder beside the checkout.
FRACATLAS = Path(
    os.environ.get("BONEFRAC_TEST_FRACATLAS", "").strip()
    or REPO.parent / "shared/datasets/fracatlas"
)


@pytest.fixture(scope="session")
def fracatlas() -> Path:
    """The developers' part of FracAtlas, when the shared folder is present."""
    if not (FRACATLAS / "images").is_dir():
        pytest.skip(f"FracAtlas not present at {FRACATLAS} (set BONEFRAC_TEST_FRACATLAS)")
    return FRACATLAS


#: The drawn stand-in's class when the real dataset is absent.
RADIOGRAPH_CLASS = "Oblique fracture"


@pytest.fixture(scope="session")
def radiograph_file(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """One radiograph as a user would have it, as a JPEG file of its own: the first
    training image of the real dataset when present (``real_dataset``), else a drawn
    stand-in (``trainer.synth``'s oblique fracture). Every test that needs "a radiograph"
    takes this one, so all of them switch to real data together."""
    try:
        dataset: Path | None = request.getfixturevalue("real_dataset")
    except pytest.skip.Exception:
        dataset = None
    real = sorted(dataset.glob("*/Train/*.jpg")) if dataset else []
    folder = tmp_path_factory.mktemp("radiograph")
    if real:
        target = folder / real[0].name  # a copy: no test can touch the dataset
        target.write_bytes(real[0].read_bytes())
        return target
    import numpy as np

    from trainer.synth import render

    target = folder / "synthetic-oblique.jpg"
    render(RADIOGRAPH_CLASS, np.random.default_rng(0), size=256).save(target, format="JPEG")
    return target


@pytest.fixture(scope="session")
def running_service(
    tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """``python -m service`` on a free loopback port serving the tiny model: (URL, log)."""
    port = free_port()
    log = tmp_path_factory.mktemp("service-log") / "service.log"
    env = {
        **os.environ,
        "BONEFRAC_MODELS_DIR": str(tiny_models_dir),
        "BONEFRAC_MODEL_NAME": MODEL_NAME,
        "BONEFRAC_RELOAD_INTERVAL_S": "0",
    }
    env.pop("BONEFRAC_API_KEY", None)
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(f"{url}/readyz", proc, log, SERVICE_START_TIMEOUT)
        yield url, log
    finally:
        stop(proc)
