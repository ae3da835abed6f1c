"""``python -m trainer {synth,train,crossval,assemble,evaluate}``: the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelio.locations import ModelPlace
from trainer.errors import TrainerError


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Train, evaluate and export the bone-fracture X-ray classifier.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="write a synthetic radiograph dataset")
    synth.add_argument("--out", type=Path, required=True, help="folder to create")
    synth.add_argument("--per-class", type=_positive, default=150, help="images per class")
    synth.add_argument("--size", type=_positive, default=256, help="typical image side (px)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--detection",
        action="store_true",
        help="write Fractured/ and Non_fractured/ bones with the signs' outlines in a COCO "
        "file (for --fracture-data) instead of the ten type folders",
    )

    train = commands.add_parser("train", help="train and export the next model version")
    _add_training_flags(train)
    train.add_argument(
        "--models",
        type=Path,
        default=None,
        help="models folder (default: $BONEFRAC_MODELS_DIR or models)",
    )
    train.add_argument(
        "--name", default=None, help="model name (default: $BONEFRAC_MODEL_NAME or bone-fracture)"
    )
    train.add_argument(
        "--data-description",
        help="one sentence on the training data, shown with every answer (default: the "
        "image count and the data folder's name)",
    )
    train.add_argument(
        "--fracture-data",
        type=Path,
        help="a folder of fractured and intact radiographs (Fractured/ and Non_fractured/, "
        "or fracture/ and normal/) with a COCO file of fracture outlines beside them: adds "
        "the fracture detection and localisation heads (needs --recipe best)",
    )
    train.add_argument(
        "--feature-cache",
        type=Path,
        help="a folder that keeps the fracture data's backbone features between runs, named "
        "by the images' fingerprint, backbone and taps (a second run skips the backbone pass)",
    )
    train.add_argument("--tune", action="store_true", help="keras-tuner search first")
    train.add_argument("--max-trials", type=_positive, default=5)

    crossval = commands.add_parser(
        "crossval", help="grouped k-fold cross-validation of a recipe (exports nothing)"
    )
    _add_training_flags(crossval)
    crossval.add_argument("--folds", type=_positive, default=5)
    crossval.add_argument("--json", action="store_true", help="print results as JSON")

    assemble = commands.add_parser(
        "assemble",
        help="export a shipped pretrained model (head.npz + metadata) as the next version",
    )
    assemble.add_argument(
        "--from",
        dest="source",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "default-model",
        help="folder with head.npz, metadata.json and reports/ (default: the repository's "
        "default-model/)",
    )
    assemble.add_argument(
        "--models",
        type=Path,
        default=None,
        help="models folder (default: $BONEFRAC_MODELS_DIR or models)",
    )
    assemble.add_argument(
        "--name",
        default=None,
        help="model name (default: $BONEFRAC_MODEL_NAME, else the shipped model's own)",
    )

    reviewed = commands.add_parser(
        "export-reviewed",
        help="write the readers' reviewed cases (with stored images) as a training set",
    )
    reviewed.add_argument("--out", type=Path, required=True, help="new folder to write")
    reviewed.add_argument(
        "--database-url",
        help="the service's records database (default: $BONEFRAC_DATABASE_URL, else SQLite "
        "in $BONEFRAC_RECORDS_DIR or records/)",
    )
    reviewed.add_argument(
        "--no-fracture-folder",
        help="also export images readers said show no fracture, into this class folder",
    )

    evaluate = commands.add_parser("evaluate", help="score an exported version on a dataset")
    evaluate.add_argument("--model", type=Path, required=True, help="models/<name>/<N>")
    evaluate.add_argument("--data", type=Path, required=True)
    evaluate.add_argument(
        "--split",
        choices=["auto", "test", "all"],
        default="auto",
        help="auto: the data's test folders if it has any, else all images",
    )
    evaluate.add_argument(
        "--out", type=Path, help="report folder (default: <model>/reports/evaluation)"
    )
    evaluate.add_argument("--json", action="store_true", help="print metrics as JSON")
    return parser


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by train and crossval; unset ones fall back to the recipe's values."""
    parser.add_argument("--data", type=Path, required=True, help="folder of class folders")
    parser.add_argument(
        "--recipe",
        default="default",
        help="default (5 epochs), best (highest grouped-CV accuracy measured), or any name "
        "in trainer/recipes.py (docs/experiments.md lists them with their scores)",
    )
    parser.add_argument("--epochs", type=_positive)
    parser.add_argument("--image-size", type=_positive, help="model input side (px)")
    parser.add_argument("--batch-size", type=_positive)
    parser.add_argument("--rgb", action="store_true", help="3-channel input (default gray)")
    parser.add_argument(
        "--backbone",
        help="efficientnet-lite0 or efficientnet-lite2 (ImageNet weights from the "
        "'pretrained' extra), or a keras.applications name with --weights",
    )
    parser.add_argument(
        "--weights", type=Path, help="local weights file for a keras.applications --backbone"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _config(args: argparse.Namespace, models: Path) -> Any:
    from trainer.recipes import recipe_settings  # noqa: PLC0415
    from trainer.train import TrainConfig  # noqa: PLC0415

    settings = recipe_settings(args.recipe)
    explicit = {
        "epochs": args.epochs,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "backbone": args.backbone,
        "weights": args.weights,
    }
    settings.update({key: value for key, value in explicit.items() if value is not None})
    from trainer.backbones import is_registered  # noqa: PLC0415

    # registry backbones copy a gray image to their three channels inside the model
    if args.rgb or (args.backbone and not is_registered(args.backbone)):
        settings["channels"] = 3
    return TrainConfig(
        data_dir=args.data,
        models_dir=models,
        fracture_data=getattr(args, "fracture_data", None),
        feature_cache=getattr(args, "feature_cache", None),
        seed=args.seed,
        verbose=0 if args.quiet else 1,
        **settings,
    )


def _synth(args: argparse.Namespace) -> None:
    from trainer.synth import write_dataset, write_detection_dataset  # noqa: PLC0415

    write = write_detection_dataset if args.detection else write_dataset
    try:
        summary = write(args.out, per_class=args.per_class, size=args.size, seed=args.seed)
    except ValueError as exc:
        raise TrainerError(str(exc)) from exc
    print(f"wrote synthetic dataset to {args.out}: {json.dumps(summary)}")


def _train(args: argparse.Namespace) -> None:
    from dataclasses import replace  # noqa: PLC0415

    from trainer.train import train  # noqa: PLC0415

    config = replace(
        _config(args, args.models),
        name=args.name,
        tune=args.tune,
        max_trials=args.max_trials,
        data_description=args.data_description,
    )
    train(config)


def _crossval(args: argparse.Namespace) -> None:
    from trainer.crossval import cross_validate, format_summary  # noqa: PLC0415

    result = cross_validate(_config(args, Path(os.devnull)), folds=args.folds)
    print(json.dumps(result, indent=2) if args.json else format_summary(result))


def _assemble(args: argparse.Namespace) -> None:
    from trainer.assemble import assemble, describe  # noqa: PLC0415

    print(describe(assemble(args.source, args.models, args.name)))


def _evaluate(args: argparse.Namespace) -> None:
    from trainer.evaluate import evaluate_version  # noqa: PLC0415

    metrics = evaluate_version(args.model, args.data, split=args.split, out_dir=args.out)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        from trainer.evaluate import format_metrics  # noqa: PLC0415

        print(format_metrics(metrics))
        print(f"reports written to {metrics['reports_dir']}")


def _export_reviewed(args: argparse.Namespace) -> None:
    from trainer.reviewed import export_reviewed, url_from  # noqa: PLC0415

    summary = export_reviewed(
        args.out, url_from(args.database_url), no_fracture_folder=args.no_fracture_folder
    )
    print(summary.describe())


def _fill_defaults(args: argparse.Namespace, place: ModelPlace) -> None:
    """Flags left unset take the process's one reading of the environment."""
    if "models" in args and args.models is None:
        args.models = place.models_dir
    if args.command == "train" and args.name is None:
        args.name = place.model_name
    if args.command == "assemble" and args.name is None and place.name_from_environment:
        args.name = place.model_name


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _fill_defaults(args, ModelPlace.from_environment())
    handlers = {
        "synth": _synth,
        "train": _train,
        "crossval": _crossval,
        "assemble": _assemble,
        "evaluate": _evaluate,
        "export-reviewed": _export_reviewed,
    }
    try:
        handlers[args.command](args)
    except TrainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a folder that cannot be read or written, a full disk, ...
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was exported", file=sys.stderr)
        return 130
    return 0
