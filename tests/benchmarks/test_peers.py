"""The peer serving stacks of ``benchmarks/peers/`` stay runnable.

Their frameworks live in their own virtual environments (``make_venvs.sh``), too slow
to make in CI. So each peer's service module is imported here against a small stand-in
of its framework (decorators that return what they decorate, base classes that take
any argument), with the session's tiny model, and its request path is called the way
the framework calls it, fed by ``run.py``'s own request builder and read by its own
answer parser: a change of modelio, of the model's metadata, of the peer code or of
the benchmark's protocol code fails here. What the stand-ins cannot see (a framework's
own API moving) is caught by ``run.py --smoke`` against the real environments, which
the slow test below runs for every peer whose environment exists (bonefrac always).
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import pickle
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from starlette.requests import Request

REPO = Path(__file__).resolve().parents[2]
PEERS = REPO / "benchmarks/peers"
MODEL = "bone-fracture"


def _identity_decorator(*args, **kwargs):
    """``@x`` and ``@x(...)`` both leave the decorated object as it is."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda target: target


class _AnyBase:
    """A framework base class: takes any argument, keeps none."""

    def __init__(self, *args, **kwargs) -> None:
        self.stand_in_args = (args, kwargs)


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


@pytest.fixture
def peers(monkeypatch: pytest.MonkeyPatch, tiny_models_dir: Path) -> Callable:
    """Import one peer module (fresh) against stand-ins: ``peers(name, {module: obj})``."""
    monkeypatch.syspath_prepend(str(PEERS))
    monkeypatch.setenv("PEER_MODEL_DIR", str(tiny_models_dir / MODEL / "1"))
    monkeypatch.setenv("PEER_THREADS", "1")

    def load(name: str, stand_ins: dict[str, types.ModuleType]) -> types.ModuleType:
        for module, stand_in in stand_ins.items():
            monkeypatch.setitem(sys.modules, module, stand_in)
        monkeypatch.delitem(sys.modules, name, raising=False)
        return importlib.import_module(name)

    return load


@pytest.fixture
def image(synthetic_dataset: Path) -> bytes:
    files = sorted(synthetic_dataset.rglob("*"))
    return next(p for p in files if p.suffix in {".jpg", ".png"}).read_bytes()


@pytest.fixture
def harness(peers: Callable) -> types.ModuleType:
    return peers("run", {})


@pytest.fixture
def reference(peers: Callable, image: bytes) -> tuple[list[float], list[str]]:
    model = peers("peer_model", {}).PeerModel()
    return model.predict_bytes([image])[0]["probabilities"], model.classes


def starlette_request(path: str, body: bytes, headers: dict[str, str]) -> Request:
    """The request a Starlette-based peer receives for one of ``run.py``'s bodies."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "query_string": b"",
    }
    return Request(scope, receive)


def check(answer: object, parse: Callable, reference: tuple[list[float], list[str]]) -> None:
    probabilities, classes = reference
    got = parse(json.loads(json.dumps(answer)), classes)
    np.testing.assert_allclose(got, probabilities, atol=1e-5)


@pytest.mark.slow  # measured 15-60 s on 2 busy cores: out of the fast lane
def test_bentoml(peers: Callable, harness, image: bytes, reference, tmp_path: Path) -> None:
    bentoml = _module("bentoml", service=_identity_decorator, api=_identity_decorator)
    module = peers("bentoml_service", {"bentoml": bentoml})
    upload = tmp_path / "image.jpg"  # BentoML hands a multipart file over as a Path
    upload.write_bytes(image)
    answer = module.Bonefrac().predict([upload])
    assert len(answer) == 1
    check(answer, harness.plain_probabilities, reference)


def test_litserve(peers: Callable, harness, image: bytes, reference) -> None:
    import inspect

    litserve = _module("litserve", LitAPI=_AnyBase, LitServer=_AnyBase)
    module = peers("litserve_server", {"litserve": litserve})
    api = module.BonefracAPI(max_batch_size=8, batch_timeout=0.002)
    # LitServe parses a form only for an unannotated (or Request) parameter.
    parameter = inspect.signature(module.BonefracAPI.decode_request).parameters["request"]
    assert parameter.annotation is inspect.Parameter.empty
    api.setup("cpu")
    request = starlette_request(*harness.multipart("file", image))

    async def read_form():
        return await request.form()

    form = asyncio.run(read_form())
    pixels = api.decode_request(form)
    for batched in (api.unbatch(api.predict(api.batch([pixels, pixels]))), [api.predict(pixels)]):
        check(api.encode_response(batched[0]), harness.plain_probabilities, reference)


def test_pytriton(peers: Callable, harness, image: bytes, reference) -> None:
    stand_ins = {
        "pytriton": _module("pytriton"),
        "pytriton.decorators": _module("pytriton.decorators", batch=_identity_decorator),
        "pytriton.model_config": _module(
            "pytriton.model_config", DynamicBatcher=_AnyBase, ModelConfig=_AnyBase, Tensor=_AnyBase
        ),
        "pytriton.triton": _module("pytriton.triton", Triton=_AnyBase, TritonConfig=_AnyBase),
    }
    module = peers("pytriton_server", stand_ins)
    infer = module.make_infer(peers("peer_model", {}).PeerModel())
    # Decode the client's KServe v2 binary body as Triton does: JSON header, then BYTES.
    _, body, headers = harness.kserve_v2_binary(image)
    split = int(headers["Inference-Header-Content-Length"])
    header, tensor = json.loads(body[:split]), body[split:]
    assert header["inputs"][0]["parameters"]["binary_data_size"] == len(tensor)
    size = int.from_bytes(tensor[:4], "little")
    batch = np.array([[tensor[4 : 4 + size]]] * 2, dtype=np.object_)
    out = infer(image=batch)["probabilities"]
    assert out.shape == (2, len(reference[1]))
    answer = {"outputs": [{"name": "probabilities", "data": out[0].tolist()}]}
    check(answer, harness.triton_probabilities, reference)


def test_kserve(peers: Callable, harness, image: bytes, reference) -> None:
    import uvicorn

    rest_server = _module("kserve.protocol.rest.server", uvicorn=uvicorn)
    stand_ins = {
        "kserve": _module("kserve", Model=_AnyBase, ModelServer=_AnyBase),
        "kserve.protocol": _module("kserve.protocol"),
        "kserve.protocol.rest": _module("kserve.protocol.rest"),
        "kserve.protocol.rest.server": rest_server,
    }
    module = peers("kserve_server", stand_ins)
    # KServe hard-codes 0.0.0.0; the peer makes its server bind loopback.
    config = rest_server.uvicorn.Config("app:app", host="0.0.0.0", port=1)
    assert config.host == "127.0.0.1"
    model = module.BonefracModel("bonefrac")
    assert model.load()
    model = pickle.loads(pickle.dumps(model))  # as KServe's spawned workers receive it
    _, body, _ = harness.kserve_v1(image)
    check(model.predict(json.loads(body)), harness.kserve_probabilities, reference)
    assert base64.b64decode(json.loads(body)["instances"][0]["image_bytes"]["b64"]) == image


def test_rayserve(peers: Callable, harness, image: bytes, reference) -> None:
    def batch(**_kwargs):
        """``@serve.batch``: callers pass one item, the method receives a list."""

        def decorate(method):
            async def one(self, item):
                return (await method(self, [item]))[0]

            return one

        return decorate

    def deployment(**_kwargs):
        def decorate(cls):
            cls.bind = classmethod(lambda c: c)
            return cls

        return decorate

    serve = _module("ray.serve", batch=batch, deployment=deployment)
    module = peers("rayserve_app", {"ray": _module("ray", serve=serve), "ray.serve": serve})
    replica = module.app()
    answer = asyncio.run(replica(starlette_request(*harness.multipart("file", image, "/"))))
    check(answer, harness.plain_probabilities, reference)


def test_bonefrac_parser(harness, reference) -> None:
    probabilities, classes = reference
    answer = {
        "probabilities": [
            {"label": c, "probability": p}
            for c, p in sorted(zip(classes, probabilities, strict=True), key=lambda x: -x[1])
        ]
    }
    check(answer, harness.bonefrac_probabilities, reference)


@pytest.mark.slow
@pytest.mark.e2e
def test_run_smoke(tiny_models_dir: Path) -> None:
    """``run.py --smoke``: bonefrac, and each peer whose venv exists, start, answer one
    request that matches the in-process reference, and stop with their whole tree."""
    names = ["bonefrac", "bonefrac-litert", "bonefrac-litert-single", "bonefrac-bf16"] + [
        peer
        for peer in ("bentoml", "litserve", "pytriton", "kserve", "rayserve")
        if (PEERS / ".venvs" / peer / "bin/python").exists()
    ]
    result = subprocess.run(
        [
            sys.executable,
            str(PEERS / "run.py"),
            "--models",
            str(tiny_models_dir),
            "--smoke",
            "--servers",
            ",".join(names),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in names:
        assert f"{name}: ready in" in result.stdout


def test_a_failed_round_is_left_out_and_counted(harness) -> None:
    """A peer that failed to start once keeps its row from the round that ran; only a
    peer that failed every round loses it."""

    def round_(rps: float, p50: float) -> dict:
        row = {"p50_ms": p50, "p95_ms": p50, "p99_ms": p50, "rps": rps, "cpu_ms": 80.0}
        return {"server": "peer", "ready_s": 2.0, "rss_mib": 500.0, "pss_mib": 400.0} | {
            f"c{clients}": dict(row) for clients in harness.CLIENTS
        }

    failed = {"server": "peer", "error": "exited with 1"}

    best = harness.best_of([round_(20.0, 50.0), failed, round_(22.0, 55.0)])

    assert best["failed_rounds"] == 1
    assert best["c8"]["rps"] == 22.0  # the best of the rounds that ran
    assert best["c1"]["p50_ms"] == 50.0
    assert harness.best_of([failed, dict(failed)])["error"] == "exited with 1"


def test_cpu_spent_counts_each_process_once_and_a_reused_pid_as_new(harness) -> None:
    before = {1: (100, 5.0), 2: (200, 1.0), 9: (900, 4.0)}  # pid 9 ends during the row
    after = {1: (100, 7.5), 2: (300, 0.5), 3: (400, 0.25)}  # pid 2 now another process

    assert harness.cpu_spent(before, after) == pytest.approx(2.5 + 0.5 + 0.25)
