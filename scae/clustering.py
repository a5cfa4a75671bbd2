"""Unsupervised classification accuracy from object-capsule presences (Kosiorek et al. 2019,
sec. 4.1, LIN-MATCH; the reference code's `eval_mnist_model.py`).

k-means (`sklearn.cluster.KMeans`) is fitted on the presences of one set (the training images),
every image of every evaluated set gets its nearest cluster, and the clusters are matched to the
labels one-to-one by the Hungarian algorithm (`scipy.optimize.linear_sum_assignment`) on the
fitted set's cluster-label counts; with more clusters than classes, each class takes the clusters
it matches best and the rest go to the class most of their images have (so 20 or 40 clusters
can only help, as in the paper's extra columns). Accuracy = the share of images whose cluster's
class is their label.

Symbols: N images, K features (object capsules), C classes, Q clusters.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import optimize
from sklearn import cluster


def confusion(clusters: np.ndarray, labels: np.ndarray, num_clusters: int, num_classes: int):
    """`[Q, C]` counts of images per (cluster, label)."""
    counts = np.zeros([num_clusters, num_classes], np.int64)
    np.add.at(counts, (np.asarray(clusters), np.asarray(labels)), 1)
    return counts


def match_clusters(counts: np.ndarray) -> np.ndarray:
    """`[Q]` the class of each cluster from `[Q, C]` counts: a maximum-count one-to-one matching
    (Hungarian), then, for clusters left over when Q > C, their majority class."""
    counts = np.asarray(counts)
    rows, cols = optimize.linear_sum_assignment(-counts)
    mapping = counts.argmax(axis=1)
    mapping[rows] = cols
    return mapping


class ClusterAccuracy(NamedTuple):
    """Accuracy of k-means clusters matched to labels."""

    accuracy: dict[str, float]  # per evaluated set
    mapping: np.ndarray  # [Q] class of each cluster
    counts: dict[str, np.ndarray]  # per evaluated set: [Q, C] cluster-label counts


def kmeans_accuracy(
    fit_features: np.ndarray,
    fit_labels: np.ndarray,
    eval_sets: dict[str, tuple[np.ndarray, np.ndarray]],
    num_clusters: int = 10,
    num_classes: int = 10,
    seed: int = 0,
) -> ClusterAccuracy:
    """LIN-MATCH (module docstring).

    Args:
      fit_features, fit_labels: `[N, K]`, `[N]`: the set the clusters are fitted and matched on
        (the training set).
      eval_sets: name -> (`[N', K]` features, `[N']` labels) to score; may include the fitted set.
      num_clusters: Q >= num_classes.
      seed: k-means initialization seed.

    Raises:
      ValueError: Q < C.
    """
    if num_clusters < num_classes:
        raise ValueError(f"num_clusters ({num_clusters}) must be >= num_classes ({num_classes}).")
    kmeans = cluster.KMeans(n_clusters=num_clusters, n_init=10, max_iter=1000, random_state=seed)
    fit_clusters = kmeans.fit_predict(np.asarray(fit_features, np.float64))
    mapping = match_clusters(confusion(fit_clusters, fit_labels, num_clusters, num_classes))
    accuracy, counts = {}, {}
    for name, (features, labels) in eval_sets.items():
        clusters = kmeans.predict(np.asarray(features, np.float64))
        counts[name] = confusion(clusters, labels, num_clusters, num_classes)
        accuracy[name] = float(np.mean(mapping[clusters] == np.asarray(labels)))
    return ClusterAccuracy(accuracy, mapping, counts)
