"""The runtimes: TFLite equals the SavedModel; the service runs without TensorFlow."""

from __future__ import annotations

import shutil
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from support.direct_calls import run_python
from support.sample_images import encode

from modelio.artifact import ArtifactError, read_metadata
from modelio.images import InputSpec, load_array
from service.runtime import SavedModelPredictor, TFLitePredictor, load_predictor, warm_up

MODEL = "bone-fracture"


@pytest.fixture
def version_dir(tiny_models_dir: Path) -> Path:
    return tiny_models_dir / MODEL / "1"


@pytest.fixture
def spec(version_dir: Path) -> InputSpec:
    return InputSpec.from_dict(read_metadata(version_dir)["input"])


@pytest.fixture
def inputs(spec: InputSpec) -> np.ndarray:
    """Realistic inputs (decoded by the shared preprocessing) plus extremes."""
    images = [
        load_array(encode(fmt, mode, seed=i), spec)
        for i, (fmt, mode) in enumerate(
            [("PNG", "L"), ("JPEG", "RGB"), ("WEBP", "RGB"), ("TIFF", "I;16")]
        )
    ]
    shape = (spec.height, spec.width, spec.channels)
    images += [np.zeros(shape, np.float32), np.full(shape, 255.0, np.float32)]
    return np.stack(images)


def test_tflite_output_equals_the_saved_model(version_dir, inputs):
    pytest.importorskip("tensorflow")
    tflite = TFLitePredictor(version_dir / "model.tflite")
    saved = SavedModelPredictor(version_dir)

    got, expected = tflite.predict(inputs), saved.predict(inputs)

    assert got.shape == expected.shape == (len(inputs), 10)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_interpreter_pool_gives_the_same_answers_from_many_threads(version_dir, inputs):
    predictor = TFLitePredictor(version_dir / "model.tflite", interpreters=2, threads=1)
    expected = predictor.predict(inputs)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: predictor.predict(inputs), range(40)))

    for result in results:
        np.testing.assert_array_equal(result, expected)


def test_tflite_is_preferred_and_saved_model_is_the_fallback(version_dir, tmp_path, inputs):
    pytest.importorskip("tensorflow")
    assert load_predictor(version_dir).runtime == "tflite"
    no_tflite = tmp_path / "1"
    shutil.copytree(version_dir, no_tflite)
    (no_tflite / "model.tflite").unlink()

    fallback = load_predictor(no_tflite)

    assert fallback.runtime == "saved_model"
    np.testing.assert_allclose(
        fallback.predict(inputs), load_predictor(version_dir).predict(inputs), atol=1e-6
    )


def test_warm_up_refuses_a_model_that_disagrees_with_its_metadata(version_dir, spec):
    predictor = load_predictor(version_dir)
    with pytest.raises(ArtifactError, match="classes"):
        warm_up(predictor, spec, num_classes=3)
    with pytest.raises(ArtifactError, match="takes"):
        warm_up(predictor, InputSpec(64, 64, 1), num_classes=10)


@pytest.mark.parametrize(
    ("blocked", "runtime"),
    [((), "openvino-f32"), (("openvino",), "tflite")],
    ids=["default", "without-openvino"],
)
def test_service_runs_without_tensorflow(tiny_models_dir, blocked, runtime):
    """The `service` extra has no TensorFlow: block its import and serve a prediction,
    on OpenVINO (the default runtime when installed) and on LiteRT (when it is not)."""
    script = textwrap.dedent(
        f"""
        import sys, warnings
        for name in ("tensorflow", "keras", "tf_keras", *{blocked!r}):
            sys.modules[name] = None  # any import of these now raises ImportError
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
        from service.app import create_app
        from service.settings import Settings
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from support.sample_images import encode

        app = create_app(Settings(models_dir={str(tiny_models_dir)!r}, reload_interval_s=0))
        with TestClient(app) as client:
            response = client.post("/predict", files={{"file": ("x.png", encode(), "image/png")}})
        assert response.status_code == 200, response.text
        assert client.app.state.registry.current.predictor.runtime == {runtime!r}
        print("OK", response.json()["label"])
        """
    )
    result = run_python(script)

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("OK ")


def test_openvino_runs_the_same_tflite_file_with_the_same_answers(version_dir, inputs):
    pytest.importorskip("openvino")
    from service.runtime import OpenVINOPredictor

    tflite = TFLitePredictor(version_dir / "model.tflite").run(inputs)
    openvino = OpenVINOPredictor(version_dir / "model.tflite", threads=1)

    got = openvino.run(inputs)

    assert openvino.runtime == "openvino-f32"
    assert openvino.input_shape == TFLitePredictor(version_dir / "model.tflite").input_shape
    assert set(got) == set(tflite)  # the signature's names, not OpenVINO's tensor names
    for name, expected in tflite.items():
        assert got[name].shape == expected.shape, name
        np.testing.assert_allclose(got[name], expected, rtol=0, atol=1e-4, err_msg=name)


def test_openvino_in_bf16_says_which_arithmetic_it_runs(version_dir, inputs):
    pytest.importorskip("openvino")
    import openvino as ov

    from service.runtime import OpenVINOPredictor

    predictor = OpenVINOPredictor(version_dir / "model.tflite", precision="bf16")
    has_bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")

    assert predictor.runtime == ("openvino-bf16" if has_bf16 else "openvino-f32")
    probabilities = predictor.predict(inputs)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
    reference = TFLitePredictor(version_dir / "model.tflite").predict(inputs)
    assert np.abs(probabilities - reference).max() < 0.1  # rounded, not another model


def test_openvino_needs_the_tflite_file_and_says_so(version_dir, tmp_path):
    pytest.importorskip("openvino")
    no_tflite = tmp_path / "1"
    shutil.copytree(version_dir, no_tflite)
    (no_tflite / "model.tflite").unlink()

    with pytest.raises(ArtifactError, match="OpenVINO runtime"):
        load_predictor(no_tflite, runtime="openvino")


def test_bf16_is_refused_for_a_runtime_that_runs_float32_only():
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError, match="needs the openvino runtime"):
        Settings(runtime="tflite", inference_precision="bf16")
    assert Settings(runtime="openvino", inference_precision="bf16").runtime == "openvino"


class Runner:
    """Stands in for an interpreter: records who ran, and can hold the first run."""

    def __init__(self, name: str, log: list[str], hold: threading.Event | None = None) -> None:
        self.name, self.log, self.hold = name, log, hold
        self.started = threading.Event()

    def __call__(self) -> None:
        self.log.append(self.name)
        self.started.set()
        if self.hold is not None:
            assert self.hold.wait(30)


def test_the_defaults_are_a_runner_per_core_and_a_solo_runner_on_every_core(monkeypatch, tmp_path):
    """What the peers benchmark measured fastest under load and as fast alone."""
    from service.settings import Settings

    for name in ("INTERPRETERS", "INFERENCE_THREADS", "SOLO_THREADS", "RUNTIME"):
        monkeypatch.delenv(f"BONEFRAC_{name}", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2})
    monkeypatch.setattr("service.settings.CGROUP_CPU_MAX", tmp_path / "no-such-file")

    settings = Settings()

    assert (settings.interpreters, settings.inference_threads, settings.solo_threads) == (3, 1, 3)
    assert settings.runtime == "openvino"  # installed with the service extra


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("150000 100000\n", 2), ("max 100000\n", 3), ("800000 100000\n", 3), ("garbage", 3)],
)
def test_a_containers_cpu_quota_caps_the_default_runners(monkeypatch, tmp_path, cpu_max, expected):
    """``docker run --cpus 1.5`` on a 3-CPU machine: 2 runners, not 3."""
    from service.settings import Settings

    for name in ("INTERPRETERS", "SOLO_THREADS"):
        monkeypatch.delenv(f"BONEFRAC_{name}", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2})
    (tmp_path / "cpu.max").write_text(cpu_max)
    monkeypatch.setattr("service.settings.CGROUP_CPU_MAX", tmp_path / "cpu.max")

    settings = Settings()

    assert (settings.interpreters, settings.solo_threads) == (expected, expected)


def test_a_lone_request_gets_the_solo_runner_and_concurrent_ones_the_shared():
    from service.runtime import RunnerPool

    log: list[str] = []
    release = threading.Event()
    solo = Runner("solo", log, hold=release)
    pool = RunnerPool(solo, [Runner("shared-1", log), Runner("shared-2", log)])

    def run() -> None:
        with pool.lend() as runner:
            runner()

    first = threading.Thread(target=run)
    first.start()
    assert solo.started.wait(30)  # the first request, alone, runs on the solo runner
    others = [threading.Thread(target=run) for _ in range(4)]
    for thread in others:
        thread.start()
    for thread in others:
        thread.join(30)  # they finish while the solo runner is still held
    assert len(log) == 5
    assert set(log[1:]) <= {"shared-1", "shared-2"}  # never the held solo runner
    release.set()
    first.join(30)
    with pool.lend() as runner:  # idle again: the solo runner
        assert runner is solo
    assert pool.solo_runs == 2


def test_without_a_solo_runner_every_request_gets_a_shared_one():
    from service.runtime import RunnerPool

    shared = [Runner("shared", [])]
    pool = RunnerPool(None, shared)
    with pool.lend() as runner:
        assert runner is shared[0]
    assert pool.solo_runs == 0
    with pytest.raises(ValueError, match="at least one shared"):
        RunnerPool(object(), [])


def test_a_tflite_pool_answers_alike_on_solo_and_shared_runners(version_dir, inputs):
    predictor = TFLitePredictor(
        version_dir / "model.tflite", interpreters=2, threads=1, solo_threads=2
    )
    alone = predictor.run(inputs)  # nothing else running: the solo interpreter

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: predictor.run(inputs), range(24)))

    for result in results:
        for name, expected in alone.items():
            np.testing.assert_allclose(result[name], expected, rtol=0, atol=1e-5)


def test_service_on_openvino_answers_as_on_tflite(tiny_models_dir, make_settings):
    pytest.importorskip("openvino")
    from fastapi.testclient import TestClient
    from support.sample_images import encode

    from service.app import create_app

    uploads = [encode("PNG", "L", seed=i) for i in range(6)]

    def answers(**settings: object) -> tuple[list[list[dict]], dict]:
        app = create_app(make_settings(tiny_models_dir, **settings))
        with TestClient(app) as client, ThreadPoolExecutor(6) as pool:
            replies = list(
                pool.map(
                    lambda data: client.post(
                        "/predict", files={"file": ("x.png", data, "image/png")}
                    ),
                    uploads,
                )
            )
            models = client.get("/models").json()
        assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
        return [r.json()["probabilities"] for r in replies], models

    expected, _ = answers(runtime="tflite")
    got, models = answers(runtime="openvino")

    assert "openvino-f32" in str(models)
    for one, other in zip(got, expected, strict=True):
        assert [p["label"] for p in one] == [p["label"] for p in other]
        np.testing.assert_allclose(
            [p["probability"] for p in one], [p["probability"] for p in other], atol=1e-4
        )


def _openvino_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenVINO's reader refuses the file, as it would an operator it lacks."""

    def refuse(*_args, **_kwargs):
        raise RuntimeError("Operation 'CUSTOM_OP' is not supported")

    monkeypatch.setattr("service.runtime.OpenVINOPredictor", refuse)


def test_a_file_openvino_cannot_run_is_served_on_litert_by_default(
    tiny_models_dir, make_settings, monkeypatch, caplog
):
    from service.registry import ModelRegistry

    _openvino_fails(monkeypatch)
    registry = ModelRegistry(make_settings(tiny_models_dir))

    with caplog.at_level("WARNING", logger="service.registry"):
        loaded = registry.refresh()

    assert loaded is not None
    assert loaded.predictor.runtime == "tflite"
    assert "OpenVINO cannot run it" in caplog.text
    assert "CUSTOM_OP" in caplog.text


@pytest.mark.parametrize(
    "chosen", [{"runtime": "openvino"}, {"inference_precision": "bf16"}], ids=["runtime", "bf16"]
)
def test_a_chosen_openvino_that_fails_refuses_the_version(
    tiny_models_dir, make_settings, monkeypatch, chosen
):
    from service.registry import ModelRegistry

    _openvino_fails(monkeypatch)
    registry = ModelRegistry(make_settings(tiny_models_dir, **chosen))

    assert registry.refresh() is None
    [refusal] = registry.refused.values()
    assert "cannot be loaded by OpenVINO" in refusal.reason
