"""Fine-tune the last stage(s) of EfficientNet-Lite2 on cached activations, in grouped folds.

A diagnostic, like ``pretrained_features.py``: it measures whether training the top of
the pretrained network beats the linear probe on its frozen pooled features (the current
``pretrained`` recipe), without exporting anything.

The frozen part of Lite2 (352 px, gray) runs once over every image, plain and mirrored,
and its activation maps at the cut (the output of stage 5, 6 or 7) are cached under
``--cache`` with the pooled stage4..7 + head features of the whole network. Each fold then
trains only the tail, which starts from the ImageNet weights:

- the tail is the blocks after the cut + ``conv_head`` + ``bn1`` + ReLU6 + global pooling,
  its batch norms frozen (inference statistics, fixed scale and shift);
- ``--features multi`` feeds the head the same pooled features as the linear probe
  (stages 4..7 + head; the stages before the cut come from the cache, the rest from the
  trainable tail), ``head`` only the 1280 pooled head features;
- the head is standardisation + dropout + a softmax layer. ``--init probe`` starts it at
  the linear probe fitted on the fold's training rows (``fit_linear_head``), so epoch 0
  *is* the probe (printed as a reference); ``--init random`` starts it fresh and trains
  it alone for ``--warmup`` epochs before the tail joins;
- AdamW, separate learning rates for the tail and the head, class-balanced sample
  weights, random mirroring by picking the cached mirrored activations, optional random
  crops of the map (``--crop``, translation jitter) and label smoothing;
- three epochs are scored on the fold's held-out rows (top-1, top-3, mirror TTA): the one
  with the lowest validation loss (the fold's validation rows), the one with the best
  validation top-1, and the last; ``--verbose`` prints every epoch.

The folds are the trainer's (``grouped_folds``: near-duplicates never straddle train and
test). Note the probe baseline in ``pretrained_features.py`` fits on train + validation
rows; the epoch-0 reference here fits on the training rows only. With ``--init random``
the epoch-0 row is the untrained head, not a reference.

Measured (fold seed 0, 2 busy cores): no variant beat the probe. Fine-tuning the tail from
the probe (cut 5, 6 or 7), from a fresh head, or on the head features alone ended between
-2 and +0.2 points of it, and the validation loss rose from the first epoch on, so
early stopping on it always kept epoch 0, i.e. the probe.

Usage::

    .venv/bin/python experiments/finetune_cached.py --data DIR [--cut 6] [--seeds 0]
        [--features multi] [--init probe] [--epochs 15] [--lr-tail 1e-4] [--lr-head 1e-4]
        [--dropout 0.3] [--crop 9]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # 2 shared cores: no BLAS oversubscription
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelio.images import InputSpec
from trainer import data, efficientnet_lite, evaluate
from trainer.backbones import state_dict
from trainer.crossval import grouped_folds
from trainer.heads import fit_linear_head

BACKBONE = "efficientnet-lite2"
SIZE = 352
TAPS = ("stage4", "stage5", "stage6", "stage7", "head")
TAP_WIDTHS = (88, 120, 208, 352, 1280)
CUTS = (5, 6, 7)  # cache the output of these stages


def limit_threads(threads: int) -> None:
    import tensorflow as tf  # noqa: PLC0415

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def last_blocks(state: dict[str, np.ndarray]) -> dict[int, int]:
    """Stage number (1-based) -> index of its last block."""
    return {b.stage + 1: b.index for b in efficientnet_lite.read_blocks(state)}


def stage_output_layer(model: Any, block: efficientnet_lite.BlockSpec) -> Any:
    name = f"blocks.{block.index}._add" if block.residual else f"blocks.{block.index}._bn2"
    return model.get_layer(name).output


def extract(data_dir: Path, cache: Path) -> dict[str, np.ndarray]:
    """Activation maps at every cut + pooled features, plain and mirrored (cached)."""
    path = cache / f"lite2-{SIZE}-maps.npz"
    if path.is_file():
        return dict(np.load(path))
    import keras  # noqa: PLC0415

    started = time.monotonic()
    dataset = data.load(data.discover(data_dir), InputSpec(SIZE, SIZE, 1))
    decoded = time.monotonic() - started
    state = state_dict(BACKBONE)
    full = efficientnet_lite.build(state, (SIZE, SIZE, 1), taps=TAPS)
    efficientnet_lite.load_weights(full, state)
    blocks = efficientnet_lite.read_blocks(state)
    ends = last_blocks(state)
    maps = [stage_output_layer(full, blocks[ends[cut]]) for cut in CUTS]
    frozen = keras.Model(full.input, [*maps, full.output])
    result: dict[str, np.ndarray] = {
        "labels": dataset.labels,
        "groups": dataset.groups,
        "classes": np.array(dataset.classes),
    }
    for view, images in (("plain", dataset.images), ("mirrored", dataset.images[:, :, ::-1, :])):
        parts: list[list[np.ndarray]] = [[] for _ in range(len(CUTS) + 1)]
        for start in range(0, len(images), 16):
            outputs = frozen(images[start : start + 16], training=False)
            for part, value in zip(parts, outputs, strict=True):
                part.append(np.asarray(value))
        for cut, part in zip(CUTS, parts, strict=False):
            result[f"{view}_stage{cut}"] = np.concatenate(part).astype(np.float16)
        result[f"{view}_pooled"] = np.concatenate(parts[-1]).astype(np.float32)
    seconds = time.monotonic() - started
    result["seconds"] = np.float64(seconds)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **result)
    print(f"cached {path} (decode {decoded:.0f} s, all {seconds:.0f} s)", flush=True)
    return result


def pooled_columns(taps: tuple[str, ...]) -> np.ndarray:
    edges = np.cumsum((0, *TAP_WIDTHS))
    return np.concatenate(
        [np.arange(edges[i], edges[i + 1]) for i, t in enumerate(TAPS) if t in taps]
    )


def build_tail(state: dict[str, np.ndarray], cut: int, map_shape: tuple[int, ...]) -> Any:
    """Stage ``cut`` output -> pooled [stage cut .. stage 7, head], ImageNet weights, BN frozen."""
    import keras  # noqa: PLC0415
    from keras import layers  # noqa: PLC0415

    blocks = [b for b in efficientnet_lite.read_blocks(state) if b.stage + 1 > cut]
    inputs = keras.Input((None, None, map_shape[-1]), name=f"stage{cut}")  # crops welcome
    x = inputs
    pooled = [layers.GlobalAveragePooling2D(name=f"pool_stage{cut}")(x)]
    for block in blocks:
        has_expand = f"_blocks.{block.index}._expand_conv.weight" in state
        x = efficientnet_lite._block(layers, x, block, "expand" if has_expand else None)
        if block is blocks[-1] or blocks[blocks.index(block) + 1].stage != block.stage:
            pooled.append(layers.GlobalAveragePooling2D(name=f"pool_stage{block.stage + 1}")(x))
    head = state["_conv_head.weight"]
    x = efficientnet_lite._conv_bn(
        layers, x, int(head.shape[0]), 1, stride=1, names=("conv_head", "bn1")
    )
    pooled.append(layers.GlobalAveragePooling2D(name="pool_head")(x))
    tail = keras.Model(inputs, layers.Concatenate(name="tail_features")(pooled), name="tail")
    efficientnet_lite.load_weights(tail, state)
    for layer in tail.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False  # inference statistics, fixed scale and shift
    return tail


class Model:
    """Cached map (+ frozen pooled stages) -> tail -> standardise -> dropout -> softmax."""

    def __init__(
        self,
        *,
        state: dict[str, np.ndarray],
        cut: int,
        map_shape: tuple[int, ...],
        columns: np.ndarray,
        probe: Any,
        num_classes: int,
        dropout: float,
        seed: int,
    ) -> None:
        import keras  # noqa: PLC0415
        from keras import layers  # noqa: PLC0415

        keras.utils.set_random_seed(seed)
        self.tail = build_tail(state, cut, map_shape)
        tail_taps = TAPS[TAPS.index(f"stage{cut}") :]
        # every pooled feature the tail does not produce comes from the cache
        self.frozen_columns = np.array([c for c in columns if c < pooled_columns(tail_taps)[0]])
        tail_columns = pooled_columns(tail_taps)
        self.tail_pick = np.searchsorted(tail_columns, [c for c in columns if c in tail_columns])
        width = len(columns)
        self.head = keras.Sequential(
            [
                keras.Input((width,)),
                layers.Normalization(
                    mean=probe.mean, variance=np.square(probe.scale), name="standardise"
                ),
                layers.Dropout(dropout, seed=seed),
                layers.Dense(num_classes, name="classifier"),
            ]
        )
        if probe.weights is not None:
            self.head.get_layer("classifier").set_weights(
                [probe.weights.astype(np.float32), probe.bias.astype(np.float32)]
            )

    def features(self, maps: Any, frozen: Any, training: bool) -> Any:
        import tensorflow as tf  # noqa: PLC0415

        tail = tf.gather(self.tail(maps, training=training), self.tail_pick, axis=1)
        return tf.concat([frozen, tail], axis=1) if len(self.frozen_columns) else tail

    def logits(self, maps: Any, frozen: Any, training: bool = False) -> Any:
        return self.head(self.features(maps, frozen, training), training=training)


class _ProbeInit:
    """What ``Model`` needs from a probe: standardisation and (optionally) the weights."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, weights: Any, bias: Any) -> None:
        self.mean, self.scale, self.weights, self.bias = mean, scale, weights, bias


def balanced_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    per_class = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return per_class[labels].astype(np.float32)


def probabilities(model: Model, maps: np.ndarray, frozen: np.ndarray) -> np.ndarray:
    import tensorflow as tf  # noqa: PLC0415

    parts = []
    for start in range(0, len(maps), 64):
        logits = model.logits(
            maps[start : start + 64].astype(np.float32),
            frozen[start : start + 64],
            training=False,
        )
        parts.append(np.asarray(tf.nn.softmax(logits)))
    return np.concatenate(parts)


def random_crops(maps: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``size`` x ``size`` window of each map: translation jitter, at the cut."""
    height, width = maps.shape[1:3]
    ys = rng.integers(0, height - size + 1, len(maps))
    xs = rng.integers(0, width - size + 1, len(maps))
    return np.stack([m[y : y + size, x : x + size] for m, y, x in zip(maps, ys, xs, strict=True)])


def make_step(model: Model, args: argparse.Namespace) -> Any:
    """One AdamW step; the tail and the head have their own learning rates."""
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    tail_vars = model.tail.trainable_variables
    head_vars = model.head.trainable_variables
    tail_opt = keras.optimizers.AdamW(args.lr_tail, weight_decay=args.weight_decay)
    head_opt = keras.optimizers.AdamW(args.lr_head, weight_decay=args.weight_decay)
    tail_opt.build(tail_vars)  # slots made here, not inside the traced step
    head_opt.build(head_vars)
    loss_fn = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=args.label_smoothing
    )

    @tf.function(reduce_retracing=True)
    def step(maps: Any, frozen: Any, y: Any, w: Any, with_tail: bool) -> Any:
        variables = head_vars + tail_vars if with_tail else head_vars
        with tf.GradientTape() as tape:
            logits = model.logits(maps, frozen, training=True)
            loss = loss_fn(tf.one_hot(y, tf.shape(logits)[1]), logits, sample_weight=w)
        grads = tape.gradient(loss, variables)
        head_opt.apply_gradients(zip(grads[: len(head_vars)], head_vars, strict=True))
        if with_tail:
            tail_opt.apply_gradients(zip(grads[len(head_vars) :], tail_vars, strict=True))
        return loss

    return step


class Keeper:
    """The weights of the epoch with the best validation score, for one criterion."""

    def __init__(self, variables: list[Any]) -> None:
        self.variables = variables
        self.best, self.epoch, self.weights = float("inf"), 0, None

    def offer(self, value: float, epoch: int) -> None:
        if value < self.best:
            self.best, self.epoch = value, epoch
            self.weights = [v.numpy() for v in self.variables]

    def restore(self) -> None:
        for variable, value in zip(self.variables, self.weights or [], strict=False):
            variable.assign(value)


def train_fold(
    args: argparse.Namespace,
    *,
    cache: dict[str, np.ndarray],
    state: dict[str, np.ndarray],
    split: data.Split,
    classes: list[str],
    seed: int,
) -> dict[str, float]:
    """Train one fold; held-out scores at the best val-loss / val-accuracy / last epoch."""
    import tensorflow as tf  # noqa: PLC0415

    started = time.monotonic()
    labels, groups, k = cache["labels"], cache["groups"], len(classes)
    plain_maps, mirrored_maps = cache[f"plain_stage{args.cut}"], cache[f"mirrored_stage{args.cut}"]
    columns = pooled_columns(TAPS if args.features == "multi" else ("head",))
    plain_pooled = cache["plain_pooled"][:, columns]
    train, val = split.train, split.val

    probe = fit_linear_head(plain_pooled[train], labels[train], groups[train], k, seed=seed)
    if args.init == "random":
        probe = _ProbeInit(probe.mean, probe.scale, None, None)
    model = Model(
        state=state,
        cut=args.cut,
        map_shape=plain_maps.shape[1:],
        columns=columns,
        probe=probe,
        num_classes=k,
        dropout=args.dropout,
        seed=seed,
    )
    frozen_cols = np.searchsorted(columns, model.frozen_columns)
    plain_frozen = plain_pooled[:, frozen_cols]
    mirrored_frozen = cache["mirrored_pooled"][:, columns][:, frozen_cols]
    step = make_step(model, args)
    weights = balanced_weights(labels[train], k)
    val_weights = balanced_weights(labels[val], k)
    rng = np.random.default_rng(seed)
    scoring = {
        "cache": cache,
        "plain_frozen": plain_frozen,
        "mirrored_frozen": mirrored_frozen,
        "cut": args.cut,
        "rows": split.test,
        "classes": classes,
    }
    variables = model.tail.trainable_variables + model.head.trainable_variables
    by_loss, by_accuracy = Keeper(variables), Keeper(variables)

    def validate(epoch: int) -> tuple[float, float]:
        p = probabilities(model, plain_maps[val], plain_frozen[val])
        picked = np.clip(p[np.arange(len(val)), labels[val]], 1e-7, 1.0)
        loss = float(np.sum(-np.log(picked) * val_weights) / np.sum(val_weights))
        accuracy = float(np.mean(p.argmax(axis=1) == labels[val]))
        by_loss.offer(loss, epoch)
        by_accuracy.offer(-accuracy, epoch)
        return loss, accuracy

    validate(0)
    result = {f"epoch0_{key}": value for key, value in score(model, **scoring).items()}
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(train))
        flip = rng.random(len(train)) < 0.5
        for start in range(0, len(order), args.batch):
            batch = order[start : start + args.batch]
            rows, flips = train[batch], flip[batch]
            maps = np.where(flips[:, None, None, None], mirrored_maps[rows], plain_maps[rows])
            if args.crop:
                maps = random_crops(maps, args.crop, rng)
            frozen = np.where(flips[:, None], mirrored_frozen[rows], plain_frozen[rows])
            step(
                tf.constant(maps.astype(np.float32)),
                tf.constant(frozen),
                tf.constant(labels[rows]),
                tf.constant(weights[batch]),
                epoch > args.warmup,
            )
        loss, accuracy = validate(epoch)
        if args.verbose:  # the held-out score per epoch is a diagnostic, never a choice
            print(
                f"    epoch {epoch:2d} val loss {loss:.3f} val top-1 {accuracy:.3f} "
                f"| held-out top-1 {score(model, **scoring)['top1']:.3f}",
                flush=True,
            )
    result.update({f"last_{key}": value for key, value in score(model, **scoring).items()})
    for name, keeper in (("loss", by_loss), ("acc", by_accuracy)):
        keeper.restore()
        result.update({f"{name}_{key}": value for key, value in score(model, **scoring).items()})
        result[f"{name}_epoch"] = keeper.epoch
    result["seconds"] = time.monotonic() - started
    return result


def score(
    model: Model,
    *,
    cache: dict[str, np.ndarray],
    plain_frozen: np.ndarray,
    mirrored_frozen: np.ndarray,
    cut: int,
    rows: np.ndarray,
    classes: list[str],
) -> dict[str, float]:
    labels = cache["labels"][rows]
    p = probabilities(model, cache[f"plain_stage{cut}"][rows], plain_frozen[rows])
    q = probabilities(model, cache[f"mirrored_stage{cut}"][rows], mirrored_frozen[rows])
    plain = evaluate.compute_metrics(labels, p, classes)
    tta = evaluate.compute_metrics(labels, (p + q) / 2, classes)
    return {"top1": plain["accuracy"], "top3": plain["top3_accuracy"], "tta": tta["accuracy"]}


class _Folds:
    """Just what grouped_folds reads from a LoadedDataset."""

    def __init__(self, labels: np.ndarray, groups: np.ndarray) -> None:
        self.labels, self.groups = labels, groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--cache", default="/tmp/ft")  # noqa: S108 - scratch, re-creatable
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--folds", type=int, nargs="+", help="only these folds (1-based)")
    parser.add_argument("--cut", type=int, choices=CUTS, default=6)
    parser.add_argument("--features", choices=("multi", "head"), default="multi")
    parser.add_argument("--init", choices=("probe", "random"), default="probe")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=0, help="epochs with the tail frozen")
    parser.add_argument("--lr-tail", type=float, default=1e-4)
    parser.add_argument("--lr-head", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--crop", type=int, default=0, help="random crops of the map (train)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-only", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()

    limit_threads(args.threads)
    cache = extract(Path(args.data), Path(args.cache))
    if args.cache_only:
        return
    classes = [str(c) for c in cache["classes"]]
    state = state_dict(BACKBONE)
    folds = _Folds(cache["labels"], cache["groups"])
    name = (
        f"cut{args.cut} {args.features} init={args.init} ep{args.epochs} wu{args.warmup} "
        f"lr {args.lr_tail:g}/{args.lr_head:g} wd {args.weight_decay:g} do {args.dropout:g} "
        f"ls {args.label_smoothing:g} crop {args.crop}"
    )
    for seed in args.seeds:
        rows = []
        for number, split in enumerate(grouped_folds(folds, 5, 0.15, seed), start=1):
            if args.folds and number not in args.folds:
                continue
            r = train_fold(args, cache=cache, state=state, split=split, classes=classes, seed=seed)
            rows.append(r)
            print(
                f"  seed {seed} fold {number}: probe {r['epoch0_top1']:.3f} | best val loss "
                f"{r['loss_top1']:.3f} (epoch {r['loss_epoch']}) | best val top-1 "
                f"{r['acc_top1']:.3f} (epoch {r['acc_epoch']}) | last {r['last_top1']:.3f} "
                f"| {r['seconds']:.0f} s",
                flush=True,
            )

        def stat(key: str, rows: list[dict[str, float]] = rows) -> str:
            values = [r[key] for r in rows]
            return f"{np.mean(values):.3f} ± {np.std(values):.3f}"

        seconds = np.mean([r["seconds"] for r in rows])
        for label, prefix in (
            ("epoch 0 (the start)", "epoch0"),
            ("best val loss", "loss"),
            ("best val top-1", "acc"),
            (f"last epoch ({args.epochs})", "last"),
        ):
            print(
                f"{name} | seed {seed} | {label:30s}: top-1 {stat(f'{prefix}_top1')} "
                f"top-3 {stat(f'{prefix}_top3')} TTA {stat(f'{prefix}_tta')} "
                f"| {seconds:.0f} s/fold",
                flush=True,
            )


if __name__ == "__main__":
    main()
