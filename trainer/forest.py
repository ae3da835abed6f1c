"""An extra-trees head for the fixed oriented-gradient features, carried inside the graph.

Measured on the real training split (docs/experiments.md): on the same oriented-gradient
histograms, scikit-learn's extra trees beat every dense head we trained by gradient
descent (about 30% top-1 against 22-26%). Scikit-learn models cannot go into a
SavedModel, so the trees are grown with scikit-learn and then written out as tables that a
Keras layer walks with gathers and selects. The exported model still takes raw pixels,
and the same graph runs in TensorFlow, TF Serving and TFLite.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ForestTables:
    """Every tree as flat tables, padded to the largest tree.

    A leaf's children are itself, so walking ``depth`` steps from the root lands every
    sample on its leaf whatever the tree's own depth. Row ``[t, n]`` is node ``n`` of tree
    ``t``; ``votes[t, n]`` is the leaf's class distribution (rows sum to 1).
    """

    feature: np.ndarray  # int32 (trees, nodes)
    threshold: np.ndarray  # float32 (trees, nodes); go left when x[feature] <= threshold
    left: np.ndarray  # int32 (trees, nodes)
    right: np.ndarray  # int32 (trees, nodes)
    votes: np.ndarray  # float32 (trees, nodes, classes)
    depth: int

    @property
    def trees(self) -> int:
        return int(self.feature.shape[0])

    @property
    def nodes(self) -> int:
        return int(self.feature.shape[1])


def grow_forest(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    trees: int,
    min_leaf: int,
    seed: int,
) -> ForestTables:
    """Fit class-balanced extra trees with scikit-learn and tabulate them."""
    from sklearn.ensemble import ExtraTreesClassifier  # noqa: PLC0415

    forest = ExtraTreesClassifier(
        n_estimators=trees,
        min_samples_leaf=min_leaf,
        class_weight="balanced",
        n_jobs=-1,
        random_state=seed,
    ).fit(features, labels)
    return tabulate(forest.estimators_, forest.classes_, num_classes)


def tabulate(estimators: list[Any], present: np.ndarray, num_classes: int) -> ForestTables:
    """scikit-learn trees -> padded tables; ``present`` maps their columns to class ids."""
    nodes = max(tree.tree_.node_count for tree in estimators)
    shape = (len(estimators), nodes)
    feature = np.zeros(shape, np.int32)
    threshold = np.zeros(shape, np.float32)
    own = np.broadcast_to(np.arange(nodes, dtype=np.int32), shape)
    left, right = own.copy(), own.copy()  # padding and leaves point to themselves
    votes = np.zeros((*shape, num_classes), np.float32)
    for t, estimator in enumerate(estimators):
        tree = estimator.tree_
        count = tree.node_count
        split = tree.children_left >= 0
        feature[t, :count] = np.where(split, tree.feature, 0)
        threshold[t, :count] = np.where(split, tree.threshold, 0.0)
        left[t, :count] = np.where(split, tree.children_left, np.arange(count))
        right[t, :count] = np.where(split, tree.children_right, np.arange(count))
        weights = tree.value[:, 0, :]
        totals = weights.sum(axis=1, keepdims=True)
        votes[t, :count][:, present] = weights / np.where(totals > 0, totals, 1.0)
    depth = max(estimator.tree_.max_depth for estimator in estimators)
    return ForestTables(feature, threshold, left, right, votes, depth)


#: Added to the mean vote before the log, so a class no tree voted for has a finite logit.
VOTE_FLOOR = 1e-3


@functools.cache
def _forest_layer() -> Any:
    """The layer class, built on first use so importing this module stays TF-free."""
    import keras  # noqa: PLC0415
    from keras import ops  # noqa: PLC0415

    @keras.saving.register_keras_serializable(package="bonefrac")
    class _ForestVote(keras.layers.Layer):
        """Features (N, F) -> log of the trees' mean class vote (N, classes): the logits.

        The walk is ``depth`` rounds of gather-compare-select over all trees at once:
        plain ops that TFLite has. No weight here is trained by Keras.
        """

        def __init__(self, trees: int, nodes: int, classes: int, depth: int, **kwargs: Any) -> None:
            super().__init__(trainable=False, **kwargs)
            self.trees, self.nodes, self.classes, self.depth = trees, nodes, classes, depth
            size = trees * nodes
            table = functools.partial(self.add_weight, initializer="zeros", trainable=False)
            self.feature = table((size,), dtype="int32", name="feature")
            self.threshold = table((size,), name="threshold")
            self.left = table((size,), dtype="int32", name="left")
            self.right = table((size,), dtype="int32", name="right")
            self.votes = table((size, classes), name="votes")

        def fill(self, tables: ForestTables) -> None:
            self.feature.assign(tables.feature.ravel())
            self.threshold.assign(tables.threshold.ravel())
            self.left.assign(tables.left.ravel())
            self.right.assign(tables.right.ravel())
            self.votes.assign(tables.votes.reshape(-1, self.classes))

        def call(self, features: Any) -> Any:
            offsets = ops.arange(self.trees, dtype="int32") * self.nodes  # each tree's row
            node = ops.zeros_like(features[:, :1], dtype="int32") + offsets  # all at roots
            for _ in range(self.depth):
                value = ops.take_along_axis(features, ops.take(self.feature, node), axis=1)
                go_left = value <= ops.take(self.threshold, node)
                child = ops.where(go_left, ops.take(self.left, node), ops.take(self.right, node))
                node = child + offsets
            mean_vote = ops.mean(ops.take(self.votes, node, axis=0), axis=1)
            return ops.log(mean_vote + VOTE_FLOOR)

        def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
            return (input_shape[0], self.classes)

        def get_config(self) -> dict[str, Any]:
            return {
                **super().get_config(),
                "trees": self.trees,
                "nodes": self.nodes,
                "classes": self.classes,
                "depth": self.depth,
            }

    return _ForestVote


def ForestVote(tables: ForestTables, **kwargs: Any) -> Any:  # noqa: N802 - reads as a layer
    """A layer holding ``tables`` that turns feature vectors into the forest's log-votes."""
    layer = _forest_layer()(
        tables.trees, tables.nodes, int(tables.votes.shape[-1]), tables.depth, **kwargs
    )
    layer.fill(tables)
    return layer
