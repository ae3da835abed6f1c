"""Does the shipped model keep its accuracy when OpenVINO runs it in bfloat16?

These CPUs have AMX and AVX-512 BF16: OpenVINO's CPU plugin runs the shipped
``model.tflite`` (it reads the flat buffer itself, no conversion) in bfloat16 about 1.9x
faster than float32 (``benchmarks/model_speed.py``). bfloat16 keeps 8 bits of mantissa,
so every activation is rounded to about 0.4%; the heads then read those features. This
measures what that costs where it matters, in grouped cross-validation:

1. the frozen backbone's features of every radiograph (the type set and the fracture set)
   are read out of the shipped graph twice, by OpenVINO in float32 and in bfloat16 (two
   extra outputs: the pooled features and the localiser's 22x22 cells; the float32 copy is
   checked against the graph's own answers through the shipped heads first);
2. in each grouped fold (the trainer's own splits: near-duplicates never straddle a fold)
   the heads are fitted as the trainer fits them, on **float32** features of the training
   side, then answer the held-out side from float32 and from bfloat16 features: what
   serving a float32-trained model in bfloat16 would give;
3. for the type head also fitted and answered on bfloat16 features alone (what a trainer
   that extracted its features in bfloat16 would give).

Printed: type top-1 (fold mean ± std) and top-1 agreement; fracture ROC AUC, nested
rule-out sensitivity / rule-in specificity, and the largest probability differences.
The issue's bar for shipping a faster arithmetic: top-1 within one point and fracture
AUC within 0.005 of float32.

    .venv/bin/python experiments/runtime_precision.py --model /tmp/models/bone-fracture/1 \
        --types ../shared/datasets/bone-break-classification \
        --fractures ../shared/datasets/fracatlas/images [--seeds 0 1 2] [--cache DIR]

Needs ``pip install openvino`` in the venv (an experiment's dependency, not the
product's).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelio import contract
from modelio.artifact import read_metadata
from modelio.images import InputSpec
from service.runtime import fix_to_one_image
from trainer import data
from trainer.calibration import softmax
from trainer.detection_data import find_coco, fractured_labels, load_outlines
from trainer.fracture_heads import FractureHeads, fit_fracture_heads
from trainer.fracture_metrics import auc, nested_operating_points
from trainer.heads import LinearHead, fit_linear_head

PRECISIONS = ("f32", "bf16")


def _extra_outputs(model: Any, pooled_size: int) -> tuple[Any, Any]:
    """The graph's pooled-feature concat ``(N, F)`` and 22x22 cell concat ``(N, C, 22, 22)``.

    Found by shape: the only concatenation with ``pooled_size`` columns, and the only
    four-dimensional one with a 22x22 grid (OpenVINO keeps the TFLite graph's NHWC
    tensors as NCHW inside). :func:`_check` proves the choice against the graph's answers.
    """
    pooled = cells = None
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Concat":
            continue
        shape = op.get_output_partial_shape(0)
        dims = [d.get_length() if d.is_static else None for d in shape]
        if len(dims) == 2 and dims[1] == pooled_size:
            pooled = op.output(0)
        if len(dims) == 4 and dims[2:] == [22, 22] and (dims[1] or 0) > 22:
            cells = op.output(0)
    if pooled is None or cells is None:
        raise SystemExit("could not find the pooled and cell features in the graph")
    return pooled, cells


class Reader:
    """The shipped graph on OpenVINO at one precision, with the features read out."""

    def __init__(self, model_file: Path, precision: str, pooled_size: int) -> None:
        import openvino as ov  # noqa: PLC0415 - the experiment's own dependency

        core = ov.Core()
        model = core.read_model(str(model_file))
        fix_to_one_image(model)  # one image per inference, as the service runs it
        self.names = [o.get_any_name() for o in model.outputs]
        pooled, cells = _extra_outputs(model, pooled_size)
        model.add_outputs([pooled, cells])
        self.compiled = core.compile_model(
            model, "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        )
        self.request = self.compiled.create_infer_request()

    def __call__(self, images: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """(the graph's own outputs in order, pooled (N, F), cells NHWC float16)."""
        self.request.infer({0: images})
        outs = [self.request.get_tensor(o).data.copy() for o in self.compiled.outputs]
        answers, pooled, cells = outs[:-2], outs[-2], outs[-1]
        return answers, pooled, cells.transpose(0, 2, 3, 1).astype(np.float16)


def features(
    reader: Reader, dataset: data.LoadedDataset
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    pooled, cells, answers = [], [], []
    for start in range(len(dataset.images)):  # one at a time: the graph takes one
        a, p, c = reader(dataset.images[start : start + 1])
        pooled.append(p)
        cells.append(c)
        answers.append(a)
    return (
        np.concatenate(pooled),
        np.concatenate(cells),
        [np.concatenate([a[i] for a in answers]) for i in range(len(answers[0]))],
    )


def _check(arrays: dict[str, np.ndarray], got: dict[str, Any]) -> None:
    """The float32 features through the shipped heads give the graph's own answers."""
    head = LinearHead(
        arrays["head_mean"],
        arrays["head_scale"],
        arrays["head_weights"],
        arrays["head_bias"],
        float(arrays["head_c"]),
    )
    fracture = FractureHeads.from_arrays(arrays)
    probs = softmax(head.logits(got["pooled"].astype(np.float64)), float(arrays["temperature"]))
    fp, _ = fracture.answer(got["pooled"].astype(np.float64), got["cells"])
    graph = dict(zip(got["names"], got["answers"], strict=True))
    by_shape = {a.shape: a for a in graph.values()}
    d_type = np.abs(probs - by_shape[probs.shape]).max()
    d_frac = min(np.abs(fp - a.reshape(-1)).max() for a in graph.values() if a.size == fp.size)
    print(
        f"check: shipped heads on the read-out features vs the graph: type {d_type:.2e}, "
        f"fracture {d_frac:.2e}"
    )
    if d_type > 1e-3 or d_frac > 1e-2:
        raise SystemExit("the read-out features are not the ones the heads read")


def load_set(root: Path, spec: InputSpec, name: str) -> data.LoadedDataset:
    started = time.monotonic()
    dataset = data.load(data.discover(root), spec)
    print(f"{name}: {len(dataset.labels)} radiographs loaded in {time.monotonic() - started:.0f} s")
    return dataset


def extract(
    model_dir: Path, dataset: data.LoadedDataset, pooled_size: int, cache: Path | None, name: str
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for precision in PRECISIONS:
        file = (
            None if cache is None else cache / f"{name}-{precision}-{dataset.fingerprint[:16]}.npz"
        )
        if file is not None and file.is_file():
            with np.load(file) as stored:
                out[precision] = {"pooled": stored["pooled"], "cells": stored["cells"]}
            continue
        started = time.monotonic()
        reader = Reader(model_dir / "model.tflite", precision, pooled_size)
        pooled, cells, answers = features(reader, dataset)
        out[precision] = {
            "pooled": pooled,
            "cells": cells,
            "answers": answers,
            "names": reader.names,
        }
        print(f"{name} {precision}: {time.monotonic() - started:.0f} s")
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            np.savez(file, pooled=pooled, cells=cells)
    return out


def type_cv(
    dataset: data.LoadedDataset, feats: dict[str, dict[str, Any]], seed: int
) -> dict[str, Any]:
    tops: dict[str, list[float]] = {"f32": [], "f32->bf16": [], "bf16": []}
    agree = []
    classes = len(dataset.classes)
    from sklearn.model_selection import StratifiedGroupKFold  # noqa: PLC0415

    labels = dataset.labels
    splitter = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    for train, test in splitter.split(labels, labels, dataset.groups):
        head = fit_linear_head(
            feats["f32"]["pooled"][train], labels[train], dataset.groups[train], classes, seed=seed
        )
        p32 = head.probabilities(feats["f32"]["pooled"][test]).argmax(1)
        p16 = head.probabilities(feats["bf16"]["pooled"][test]).argmax(1)
        own = fit_linear_head(
            feats["bf16"]["pooled"][train], labels[train], dataset.groups[train], classes, seed=seed
        )
        pown = own.probabilities(feats["bf16"]["pooled"][test]).argmax(1)
        tops["f32"].append(float(np.mean(p32 == labels[test])))
        tops["f32->bf16"].append(float(np.mean(p16 == labels[test])))
        tops["bf16"].append(float(np.mean(pown == labels[test])))
        agree.append(float(np.mean(p32 == p16)))
    return {
        "top1": {
            k: (round(float(np.mean(v)), 4), round(float(np.std(v)), 4)) for k, v in tops.items()
        },
        "top1_agreement_f32_vs_f32->bf16": round(float(np.mean(agree)), 4),
    }


def fracture_cv(
    dataset: data.LoadedDataset,
    feats: dict[str, dict[str, Any]],
    coverage: np.ndarray,
    seed: int,
) -> dict[str, Any]:
    from sklearn.model_selection import StratifiedGroupKFold  # noqa: PLC0415

    labels = fractured_labels(dataset)
    scores = {"f32": np.zeros(len(labels)), "f32->bf16": np.zeros(len(labels))}
    folds = np.zeros(len(labels), int)
    splitter = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    for number, (train, val) in enumerate(splitter.split(labels, labels, dataset.groups)):
        started = time.monotonic()
        heads = fit_fracture_heads(
            feats["f32"]["pooled"][train],
            feats["f32"]["cells"][train],
            coverage[train],
            labels[train],
            dataset.groups[train],
            seed=seed,
        )
        for key, precision in (("f32", "f32"), ("f32->bf16", "bf16")):
            probs, _ = heads.answer(feats[precision]["pooled"][val], feats[precision]["cells"][val])
            scores[key][val] = probs
        folds[val] = number
        print(f"  fracture fold {number} in {time.monotonic() - started:.0f} s", flush=True)
    out: dict[str, Any] = {}
    for key, s in scores.items():
        nested = nested_operating_points(labels, s, folds)
        out[key] = {"auc": round(auc(labels, s), 4), **nested}
    diff = np.abs(scores["f32"] - scores["f32->bf16"])
    out["probability_difference"] = {
        "max": round(float(diff.max()), 4),
        "p95": round(float(np.quantile(diff, 0.95)), 4),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a version folder")
    parser.add_argument("--types", type=Path, required=True)
    parser.add_argument("--fractures", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fracture-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--cache", type=Path, help="keep the read-out features here")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--skip-types", action="store_true", help="only the fracture heads' cross-validation"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)

    metadata = read_metadata(args.model)
    spec = InputSpec.from_dict(metadata["input"])
    with np.load(args.model / "head.npz") as stored:
        arrays = {k: stored[k] for k in stored.files}
    pooled_size = int(arrays["head_mean"].shape[0])
    result: dict[str, Any] = {
        "model": str(args.model),
        "outputs": list(contract.output_names(metadata)),
    }

    if args.skip_types:
        args.seeds = []
    types = load_set(args.types, spec, "types")
    tfeats = extract(args.model, types, pooled_size, args.cache, "types")
    if "answers" in tfeats["f32"]:
        _check(arrays, tfeats["f32"])
    result["type"] = {str(s): type_cv(types, tfeats, s) for s in args.seeds}
    print(json.dumps(result["type"], indent=1), flush=True)
    del types, tfeats

    fractures = load_set(args.fractures, spec, "fractures")
    coco = find_coco(args.fractures)
    assert coco is not None
    ffeats = extract(args.model, fractures, pooled_size, args.cache, "fractures")
    outlines = load_outlines(
        coco, fractures.paths, ffeats["f32"]["cells"].shape[1:3], args.fractures
    )
    result["fracture"] = {
        str(s): fracture_cv(fractures, ffeats, outlines.coverage, s) for s in args.fracture_seeds
    }
    print(json.dumps(result["fracture"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
