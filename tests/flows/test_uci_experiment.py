"""The UCI task of flows.experiment: `python -m flows.train --config=flows/configs/uci.py:smoke`
end to end on synthetic POWER-format data (early stopping, metrics.json with the test
log-likelihood in nats +- 2 standard errors, re-derived from the best checkpoint), the missing
data error, and the paper hyperparameters of the configs."""

import json
import math
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from common import experiment
from common.data.mnist import DataError
from flows import density as flows_density
from flows import early_stopping as flows_early_stopping
from flows import experiment as flows_experiment
from flows import uci
from flows.configs import uci as uci_configs
from tests import binaries

NUM_ROWS = 400  # POWER split: 324 train (smoke uses the first 200), 36 validation, 40 test


def _write_power(data_dir: str) -> np.ndarray:
    raw = np.random.default_rng(0).gamma(2.0, 1.0, size=(NUM_ROWS, 8))
    os.makedirs(os.path.join(data_dir, "maf", "power"))
    np.save(os.path.join(data_dir, "maf", "power", "data.npy"), raw)
    return raw


class SmokeEndToEndTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix="flows_uci_e2e_")
        cls.data_dir = os.path.join(cls.tmp, "data")
        _write_power(cls.data_dir)
        cls.proc = binaries.run(
            "flows.train",
            "--config=flows/configs/uci.py:smoke",
            f"--config.data.data_dir={cls.data_dir}",
            f"--results_dir={os.path.join(cls.tmp, 'results')}",
            "--run_name=ref",
        )
        cls.run_dir = os.path.join(cls.tmp, "results", "ref", "1")
        with open(os.path.join(cls.run_dir, "metrics.json")) as f:
            cls.metrics = json.load(f)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def test_report_in_nats_without_bits_per_pixel(self):
        m = self.metrics
        self.assertIn("POWER test log-likelihood", self.proc.stdout)
        self.assertIn("nats", self.proc.stdout)
        self.assertEqual((m["task"], m["dataset"], m["step"]), ("uci", "power", 20))
        self.assertEqual(m["num_test_examples"], 40)
        self.assertEqual(m["num_train_examples"], 200)
        self.assertNotIn("test_bits_per_pixel", m)
        self.assertTrue(math.isfinite(m["test_log_likelihood"]))
        self.assertGreater(m["test_log_likelihood_2se"], 0)

    def test_early_stopping_per_epoch(self):
        state = flows_early_stopping.load_early_stopping(self.run_dir)
        self.assertEqual([s for s, _ in state.history], [10, 20])  # 200 / 20 = 10 steps an epoch
        self.assertEqual(state.patience_steps, 10)
        self.assertEqual(
            self.metrics["checkpoint"], os.path.join(self.run_dir, state.best_checkpoint)
        )
        self.assertEqual(self.metrics["best_epoch"], state.best_step / 10)

    def test_test_log_likelihood_rederived_from_the_best_checkpoint(self):
        restored = experiment.load_from_checkpoint(self.run_dir, self.metrics["checkpoint"])
        data = uci.load_uci("power", self.data_dir)
        # Batch-norm statistics of the 200 training examples the run used, then the test split.
        restored.model.set_batch_norm_statistics(tf.constant(data.train[:200]))
        log_p = restored.model.log_prob(tf.constant(data.test), training=False).numpy()
        log_p = log_p.astype(np.float64)
        self.assertAllClose(self.metrics["test_log_likelihood"], log_p.mean(), atol=1e-4)
        two_se = 2 * log_p.std(ddof=1) / math.sqrt(len(log_p))
        self.assertAllClose(self.metrics["test_log_likelihood_2se"], two_se, atol=1e-4)


class MissingDataTest(tf.test.TestCase):
    def test_missing_files_raise_a_data_error_naming_them(self):
        config = uci_configs.get_config("smoke")
        config.data.data_dir = self.create_tempdir().full_path
        with self.assertRaises(DataError) as ctx:
            flows_experiment.train_and_evaluate(config, self.create_tempdir().full_path)
        message = str(ctx.exception)
        self.assertIn(os.path.join(config.data.data_dir, "maf", "power", "data.npy"), message)
        self.assertIn("https://zenodo.org/record/1161203", message)


class ConfigTest(parameterized.TestCase):
    @parameterized.parameters(
        ("power", 100, "relu"),
        ("gas", 100, "tanh"),
        ("hepmass", 512, "relu"),
        ("miniboone", 512, "relu"),
        ("bsds300", 512, "relu"),
    )
    def test_paper_hyperparameters(self, variant, units, activation):
        c = uci_configs.get_config(variant)
        self.assertEqual((c.task, c.data.dataset), ("uci", variant))
        self.assertEqual((c.model.flow, c.model.num_layers), ("maf", 5))
        self.assertEqual(tuple(c.model.hidden_units), (units, units))
        self.assertEqual(c.model.activation, activation)
        self.assertTrue(c.model.batch_norm)
        self.assertEqual(c.batch_size, 100)
        self.assertEqual(c.optimizer.learning_rate, 1e-4)
        self.assertEqual(c.optimizer.weight_decay, 1e-6)
        self.assertEqual(c.early_stopping.patience_epochs, 30)
        self.assertEqual(c.early_stopping.eval_every_epochs, 1)

    @parameterized.parameters(*uci.DATASETS)
    def test_model_event_size(self, variant):
        config = uci_configs.get_config(variant)
        config.model.hidden_units = (8,)  # the event size does not depend on the width
        model = flows_density.build_model(config)
        self.assertEqual(model.event_size, uci.DIMENSIONS[variant])

    def test_unknown_variant(self):
        with self.assertRaisesRegex(ValueError, "Unknown variant"):
            uci_configs.get_config("cifar10")
