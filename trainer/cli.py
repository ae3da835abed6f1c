"""``python -m trainer {synth,train,evaluate}``: the command line over the pipeline stages."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

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
    synth.add_argument("--per-class", type=_positive, default=60, help="images per class")
    synth.add_argument("--size", type=_positive, default=256, help="typical image side (px)")
    synth.add_argument("--seed", type=int, default=0)

    train = commands.add_parser("train", help="train and export the next model version")
    train.add_argument("--data", type=Path, required=True, help="folder of class folders")
    train.add_argument(
        "--models",
        type=Path,
        default=Path(os.environ.get("BONEFRAC_MODELS_DIR", "models")),
        help="models folder (default: models)",
    )
    train.add_argument("--name", default="bone-fracture", help="model name")
    train.add_argument("--epochs", type=_positive, default=5)
    train.add_argument("--image-size", type=_positive, default=128, help="model input side")
    train.add_argument("--batch-size", type=_positive, default=32)
    train.add_argument("--rgb", action="store_true", help="3-channel input (default gray)")
    train.add_argument("--tune", action="store_true", help="keras-tuner search first")
    train.add_argument("--max-trials", type=_positive, default=5)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--quiet", action="store_true", help="no progress bars")

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


def _synth(args: argparse.Namespace) -> None:
    from trainer.synth import write_dataset  # noqa: PLC0415

    try:
        summary = write_dataset(args.out, per_class=args.per_class, size=args.size, seed=args.seed)
    except ValueError as exc:
        raise TrainerError(str(exc)) from exc
    print(f"wrote synthetic dataset to {args.out}: {json.dumps(summary)}")


def _train(args: argparse.Namespace) -> None:
    from trainer.train import TrainConfig, train  # noqa: PLC0415

    train(
        TrainConfig(
            data_dir=args.data,
            models_dir=args.models,
            name=args.name,
            epochs=args.epochs,
            image_size=args.image_size,
            channels=3 if args.rgb else 1,
            batch_size=args.batch_size,
            seed=args.seed,
            tune=args.tune,
            max_trials=args.max_trials,
            verbose=0 if args.quiet else 1,
        )
    )


def _evaluate(args: argparse.Namespace) -> None:
    from trainer.evaluate import evaluate_version  # noqa: PLC0415

    metrics = evaluate_version(args.model, args.data, split=args.split, out_dir=args.out)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        from trainer.evaluate import format_metrics  # noqa: PLC0415

        print(format_metrics(metrics))
        print(f"reports written to {metrics['reports_dir']}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"synth": _synth, "train": _train, "evaluate": _evaluate}
    try:
        handlers[args.command](args)
    except TrainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was exported", file=sys.stderr)
        return 130
    return 0
