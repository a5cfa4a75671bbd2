"""scae/clustering.py: LIN-MATCH on constructed features and confusions."""

import numpy as np
import tensorflow as tf

from scae import clustering


class ClusteringTest(tf.test.TestCase):
    def test_separable_features_with_permuted_labels_score_100_percent(self):
        rng = np.random.default_rng(0)
        centres = rng.normal(size=(10, 24)) * 10
        classes = rng.integers(0, 10, 2000)
        relabel = rng.permutation(10)  # the clusters know nothing of the label names
        features = centres[classes] + rng.normal(size=(2000, 24)) * 0.1
        labels = relabel[classes]
        result = clustering.kmeans_accuracy(
            features[:1500], labels[:1500], {"test": (features[1500:], labels[1500:])}
        )
        self.assertEqual(result.accuracy["test"], 1.0)
        self.assertEqual(sorted(result.mapping), list(range(10)))

    def test_hungarian_matching_on_a_constructed_confusion(self):
        # 3 clusters x 3 classes. Greedy majority would give clusters 0 and 1 both class 0;
        # the one-to-one matching maximizing the total is 0 -> 0, 1 -> 2, 2 -> 1:
        # 50 + 30 + 40 = 120 of 200 correct, i.e. 60%.
        counts = np.array([[50, 10, 0], [45, 5, 30], [5, 40, 15]])
        mapping = clustering.match_clusters(counts)
        self.assertAllEqual(mapping, [0, 2, 1])
        self.assertEqual(counts[np.arange(3), mapping].sum() / counts.sum(), 0.6)

    def test_extra_clusters_take_their_majority_class(self):
        counts = np.array([[9, 1], [2, 8], [7, 3], [1, 6]])  # 4 clusters, 2 classes
        self.assertAllEqual(clustering.match_clusters(counts), [0, 1, 0, 1])

    def test_more_clusters_on_overlapping_features(self):
        rng = np.random.default_rng(1)
        labels = rng.integers(0, 2, 600)
        features = labels[:, None] * 1.0 + rng.normal(size=(600, 3)) * 0.6  # overlapping
        result = clustering.kmeans_accuracy(
            features, labels, {"fit": (features, labels)}, num_clusters=4, num_classes=2
        )
        counts = result.counts["fit"]
        expected = counts[np.arange(4), result.mapping].sum() / 600
        self.assertAllClose(result.accuracy["fit"], expected)
        self.assertGreater(result.accuracy["fit"], 0.7)
        with self.assertRaisesRegex(ValueError, "num_clusters"):
            clustering.kmeans_accuracy(features, labels, {}, num_clusters=1, num_classes=2)


if __name__ == "__main__":
    tf.test.main()
