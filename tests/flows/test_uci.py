"""flows.uci on tiny synthetic files in the MAF authors' formats: the preprocessing against
NumPy re-derivations and invariants (split sizes, standardization statistics, dropped columns,
noise bounds, determinism), the file errors, and the step-indexed pipelines."""

import os
import re
import sys
from unittest import mock

import numpy as np
import tensorflow as tf

from common.data.mnist import DataError
from flows import uci

try:
    import pandas as pd
except ImportError:  # GAS pickles need pandas; those cases are skipped without it.
    pd = None
try:
    import h5py
except ImportError:
    h5py = None


def _tail(n: int) -> int:
    return int(0.1 * n)


def _write(root: str, relative: str, write) -> str:
    path = os.path.join(root, "maf", relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write(path)
    return path


def _power_raw(n: int = 2000, seed: int = 0) -> np.ndarray:
    """Integer readings 0..10 in the 8 raw columns; the time column (last) is the row id, so
    every output row can be traced back to its raw row."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 11, size=(n, 8)).astype(np.float64)
    raw[:, 1] = rng.normal(1000.0, 50.0, size=n)  # dropped: global reactive power
    raw[:, 3] = rng.normal(-1000.0, 50.0, size=n)  # dropped: global intensity
    raw[:, 7] = np.arange(n)
    return raw


class PowerTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.raw = _power_raw()
        self.data = uci.preprocess_power(self.raw)

    def test_split_sizes_dtype_and_width(self):
        n = len(self.raw)
        num_test = _tail(n)
        num_val = _tail(n - num_test)
        self.assertEqual([len(x) for x in self.data], [n - num_test - num_val, num_val, num_test])
        for x in self.data:
            self.assertEqual(x.dtype, np.float32)
            self.assertEqual(x.shape[1], 6)

    def test_standardized_with_train_plus_validation_statistics(self):
        fit = np.vstack([self.data.train, self.data.validation]).astype(np.float64)
        self.assertAllClose(fit.mean(0), np.zeros(6), atol=1e-5)
        self.assertAllClose(fit.std(0), np.ones(6), atol=1e-5)
        # The test split is not part of the fit: its means are not all zero.
        self.assertGreater(np.abs(self.data.test.mean(0)).max(), 1e-3)

    def _raw_rows(self):
        """Raw row index of every output row, from the noise-free time column."""
        out = np.vstack(list(self.data)).astype(np.float64)
        z = out[:, 5]
        t = (z - z.min()) / (z.max() - z.min()) * (len(self.raw) - 1)
        rows = np.round(t).astype(np.int64)
        self.assertAllClose(t, rows, atol=1e-3)
        return out, rows

    def test_rows_are_a_shuffle_and_time_is_standardized_without_noise(self):
        out, rows = self._raw_rows()
        self.assertAllEqual(np.sort(rows), np.arange(len(self.raw)))
        self.assertNotAllEqual(rows, np.arange(len(self.raw)))  # shuffled
        # The time column of train + validation standardized with its own (biased) statistics.
        fit = len(self.data.train) + len(self.data.validation)
        t = rows.astype(np.float64)
        expected = (t - t[:fit].mean()) / t[:fit].std()
        self.assertAllClose(out[:, 5], expected, atol=1e-5)

    def test_kept_columns_and_uniform_noise_bounds(self):
        # Output column j is (raw column + U(0, c) noise - mean) / std for the kept raw columns
        # [0, 2, 4, 5, 6, 7] with c = 0.001 (gap), 0.01 (voltage), 1, 1, 1 (sub-meterings), 0
        # (time). Regressing on the raw column (exact, independent of the noise) recovers the
        # scale; the residuals, rescaled, are the centred noise.
        out, rows = self._raw_rows()
        for j, (raw_column, bound) in enumerate(
            zip([0, 2, 4, 5, 6, 7], [0.001, 0.01, 1.0, 1.0, 1.0, 0.0], strict=True)
        ):
            r = self.raw[rows, raw_column]
            slope, intercept = np.polyfit(r, out[:, j], 1)
            noise = (out[:, j] - (slope * r + intercept)) / slope
            spread = noise.max() - noise.min()
            if bound:
                self.assertBetween(spread, 0.95 * bound, 1.05 * bound)
            else:
                self.assertLess(spread, 1e-3)

    def test_dropped_columns_are_gone(self):
        out, rows = self._raw_rows()
        for dropped in (1, 3):
            for j in range(6):
                corr = np.corrcoef(self.raw[rows, dropped], out[:, j])[0, 1]
                self.assertLess(abs(corr), 0.2, (dropped, j))

    def test_matches_the_authors_random_stream(self):
        # Re-derivation: RandomState(42) permutes the rows (shuffle == permutation of the row
        # indices), then draws voltage, gap and sub-metering noise in that order.
        rng = np.random.RandomState(42)
        data = self.raw[rng.permutation(len(self.raw))][:, [0, 2, 4, 5, 6, 7]]
        n = len(data)
        voltage, gap, sm = 0.01 * rng.rand(n, 1), 0.001 * rng.rand(n, 1), rng.rand(n, 3)
        data = data + np.hstack([gap, voltage, sm, np.zeros((n, 1))])
        num_test = _tail(n)
        fit = data[: n - num_test]
        expected = (data[n - num_test :] - fit.mean(0)) / fit.std(0)
        self.assertAllClose(self.data.test, expected, atol=1e-5)

    def test_deterministic_and_input_untouched(self):
        before = self.raw.copy()
        again = uci.preprocess_power(self.raw)
        self.assertAllEqual(self.raw, before)
        for a, b in zip(self.data, again, strict=True):
            self.assertAllEqual(a, b)

    def test_wrong_width_raises(self):
        with self.assertRaisesRegex(DataError, r"expected float \[N, 8\]"):
            uci.preprocess_power(self.raw[:, :7])

    def test_load_from_file(self):
        root = self.create_tempdir().full_path
        _write(root, "power/data.npy", lambda p: np.save(p, self.raw))
        loaded = uci.load_uci("power", root)
        for a, b in zip(loaded, self.data, strict=True):
            self.assertAllEqual(a, b)

    def test_corrupt_file_raises(self):
        root = self.create_tempdir().full_path
        path = _write(root, "power/data.npy", lambda p: open(p, "wb").write(b"not numpy"))
        with self.assertRaisesRegex(DataError, "not a readable .npy"):
            uci.load_uci("power", root)
        self.assertTrue(os.path.exists(path))


def _gas_frame(n: int = 1000, seed: int = 0):
    """Columns Time, Meth, Eth, then 16 sensors: a near-identical triple (a, a2, a3), six
    near-identical pairs (b_i, b_i2) and c, anti-correlated with b5. The authors drop the
    *first* column that has a partner above 0.98 (signed), one at a time, so a, a2 and every b_i
    go, and c stays."""
    rng = np.random.default_rng(seed)
    columns, values = ["Time", "Meth", "Eth"], [np.arange(n), rng.normal(size=n), rng.random(n)]
    a = rng.normal(size=n)
    columns += ["a", "a2", "a3"]
    values += [a, 3 * a + 0.01 * rng.normal(size=n), 0.5 * a + 0.01 * rng.normal(size=n)]
    for i in range(6):
        b = rng.gamma(2.0, size=n)
        columns += [f"b{i}", f"b{i}2"]
        values += [b, b + 0.02 * rng.normal(size=n)]
    columns.append("c")
    values.append(-b + 0.02 * rng.normal(size=n))
    return columns, np.stack(values, axis=1)


class GasTest(tf.test.TestCase):
    def test_correlated_columns_dropped_one_at_a_time_then_standardized(self):
        columns, values = _gas_frame()
        data = uci.preprocess_gas(columns, values)
        kept = ["a3"] + [f"b{i}2" for i in range(6)] + ["c"]
        x = values[:, [columns.index(c) for c in kept]]
        x = (x - x.mean(0)) / x.std(0, ddof=1)  # over all rows, unbiased (pandas)
        n = len(x)
        num_test = _tail(n)
        num_val = _tail(n - num_test)
        cut = n - num_test - num_val
        self.assertAllClose(data.train, x[:cut], atol=1e-5)
        self.assertAllClose(data.validation, x[cut : n - num_test], atol=1e-5)
        self.assertAllClose(data.test, x[n - num_test :], atol=1e-5)

    def test_missing_column_raises(self):
        columns, values = _gas_frame()
        columns[1] = "Methane"
        with self.assertRaisesRegex(DataError, "Meth"):
            uci.preprocess_gas(columns, values)

    def test_wrong_number_of_columns_after_cleaning_raises(self):
        columns, values = _gas_frame()
        d = np.random.default_rng(5).uniform(size=(len(values), 1))  # a ninth survivor
        with self.assertRaisesRegex(DataError, r"expected \[N, 8\]"):
            uci.preprocess_gas(columns + ["d"], np.hstack([values, d]))

    def test_pickle_round_trip(self):
        if pd is None:
            self.skipTest("pandas is not installed (pip install pandas): GAS is a pandas pickle.")
        columns, values = _gas_frame()
        root = self.create_tempdir().full_path
        frame = pd.DataFrame(values, columns=columns)
        _write(root, "gas/ethylene_CO.pickle", frame.to_pickle)
        loaded = uci.load_uci("gas", root)
        expected = uci.preprocess_gas(columns, values)
        for a, b in zip(loaded, expected, strict=True):
            self.assertAllEqual(a, b)

    def test_without_pandas_the_error_says_how_to_install_it(self):
        root = self.create_tempdir().full_path
        _write(root, "gas/ethylene_CO.pickle", lambda p: open(p, "wb").write(b"x"))
        with mock.patch.dict(sys.modules, {"pandas": None}):
            with self.assertRaisesRegex(DataError, "pip install pandas"):
                uci.load_uci("gas", root)


_HEPMASS_HEADER = "# label," + ",".join(f"f{i}" for i in range(27)) + ",mass"
_DISCRETE = (3, 7, 11, 15, 19, 23, 27)  # features whose smallest value repeats > 5 times


def _hepmass_table(n: int, rng, extra_column: bool) -> np.ndarray:
    """`[n, 29 (+1)]`: label in {0, 1}, 28 features; seven take few values (their minimum
    repeats), feature 0 repeats a *middle* value 10 times but has a unique minimum (kept by the
    authors' rule, which counts the smallest value's occurrences)."""
    features = rng.normal(size=(n, 28)).round(6)
    for j in _DISCRETE:
        features[:, j] = rng.choice([-1.25, 0.5, 2.0], size=n)
    features[:10, 0] = 0.123
    labels = (np.arange(n) % 3 != 0).astype(np.float64)  # two thirds positive
    table = np.hstack([labels[:, None], features])
    if extra_column:
        table = np.hstack([table, rng.normal(size=(n, 1))])
    return table


def _write_csv(path: str, header: str, table: np.ndarray) -> None:
    with open(path, "w") as f:
        f.write(header + "\n")
        for row in table:
            f.write(",".join(repr(float(v)) for v in row) + "\n")


class HepmassTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(0)
        self.train_table = _hepmass_table(300, rng, extra_column=False)
        self.test_table = _hepmass_table(120, rng, extra_column=True)
        self.root = self.create_tempdir().full_path
        _write(
            self.root,
            "hepmass/1000_train.csv",
            lambda p: _write_csv(p, _HEPMASS_HEADER, self.train_table),
        )
        _write(
            self.root,
            "hepmass/1000_test.csv",
            lambda p: _write_csv(p, _HEPMASS_HEADER + ",extra", self.test_table),
        )

    def test_preprocessing(self):
        data = uci.load_uci("hepmass", self.root)
        train = self.train_table[self.train_table[:, 0] == 1, 1:]
        test = self.test_table[self.test_table[:, 0] == 1, 1:-1]
        mean, std = train.mean(0), train.std(0, ddof=1)
        kept = [j for j in range(28) if j not in _DISCRETE]
        train = ((train - mean) / std)[:, kept]
        test = ((test - mean) / std)[:, kept]
        num_val = _tail(len(train))
        self.assertEqual(data.train.shape, (len(train) - num_val, 21))
        self.assertAllClose(data.train, train[:-num_val], atol=1e-5)
        self.assertAllClose(data.validation, train[-num_val:], atol=1e-5)
        self.assertAllClose(data.test, test, atol=1e-5)

    def test_csv_reader_matches_pandas(self):
        if pd is None:
            self.skipTest("pandas is not installed: nothing to compare the CSV reader with.")
        for name in ("1000_train.csv", "1000_test.csv"):
            path = os.path.join(self.root, "maf", "hepmass", name)
            expected = pd.read_csv(path, index_col=False).to_numpy(np.float64)
            self.assertAllClose(uci.read_hepmass_csv(path), expected, rtol=1e-12, atol=0)

    def test_csv_reader_drops_trailing_fields_like_index_col_false(self):
        path = os.path.join(self.create_tempdir().full_path, "t.csv")
        with open(path, "w") as f:
            f.write("# label,a,b\n1,2,3,\n0,5,6,\n")
        self.assertAllEqual(uci.read_hepmass_csv(path), [[1, 2, 3], [0, 5, 6]])

    def test_test_file_without_its_extra_column_raises(self):
        _write(
            self.root,
            "hepmass/1000_test.csv",
            lambda p: _write_csv(p, _HEPMASS_HEADER, self.test_table[:, :-1]),
        )
        with self.assertRaisesRegex(DataError, "one column more"):
            uci.load_uci("hepmass", self.root)

    def test_non_numeric_csv_raises(self):
        _write(self.root, "hepmass/1000_train.csv", lambda p: open(p, "w").write("a,b\nx,y\n"))
        with self.assertRaisesRegex(DataError, "not a readable HEPMASS CSV"):
            uci.load_uci("hepmass", self.root)


class MinibooneTest(tf.test.TestCase):
    def test_preprocessing(self):
        raw = np.random.default_rng(1).gamma(2.0, 3.0, size=(500, 43))
        root = self.create_tempdir().full_path
        _write(root, "miniboone/data.npy", lambda p: np.save(p, raw))
        data = uci.load_uci("miniboone", root)
        num_test = _tail(500)
        num_val = _tail(500 - num_test)
        fit = raw[: 500 - num_test]  # train + validation
        x = (raw - fit.mean(0)) / fit.std(0)
        cut = 500 - num_test - num_val
        self.assertAllClose(data.train, x[:cut], atol=1e-5)
        self.assertAllClose(data.validation, x[cut : 500 - num_test], atol=1e-5)
        self.assertAllClose(data.test, x[500 - num_test :], atol=1e-5)

    def test_wrong_width_raises(self):
        with self.assertRaisesRegex(DataError, r"expected float \[N, 43\]"):
            uci.preprocess_miniboone(np.zeros([100, 50]))


class Bsds300Test(tf.test.TestCase):
    def _write_hdf5(self, splits: dict) -> str:
        if h5py is None:
            self.skipTest("h5py is not installed (pip install h5py): BSDS300 is an HDF5 file.")
        root = self.create_tempdir().full_path

        def write(path):
            with h5py.File(path, "w") as f:
                for name, x in splits.items():
                    f.create_dataset(name, data=x)

        _write(root, "BSDS300/BSDS300.hdf5", write)
        return root

    def test_stored_splits_as_they_are(self):
        rng = np.random.default_rng(2)
        splits = {
            s: rng.normal(size=(n, 63))
            for s, n in zip(uci.BSDS300_SPLITS, (30, 10, 20), strict=True)
        }
        data = uci.load_uci("bsds300", self._write_hdf5(splits))
        for name, x in splits.items():
            self.assertAllClose(getattr(data, name), x.astype(np.float32))
            self.assertEqual(getattr(data, name).dtype, np.float32)

    def test_missing_split_and_wrong_width_raise(self):
        root = self._write_hdf5({"train": np.zeros([5, 63]), "test": np.zeros([5, 63])})
        with self.assertRaisesRegex(DataError, "validation"):
            uci.load_uci("bsds300", root)
        root = self._write_hdf5({s: np.zeros([5, 64]) for s in uci.BSDS300_SPLITS})
        with self.assertRaisesRegex(DataError, r"expected \[N, 63\]"):
            uci.load_uci("bsds300", root)

    def test_without_h5py_the_error_says_how_to_install_it(self):
        root = self.create_tempdir().full_path
        _write(root, "BSDS300/BSDS300.hdf5", lambda p: open(p, "wb").write(b"x"))
        with mock.patch.dict(sys.modules, {"h5py": None}):
            with self.assertRaisesRegex(DataError, "pip install h5py"):
                uci.load_uci("bsds300", root)


class MissingFilesTest(tf.test.TestCase):
    def test_error_names_every_expected_path_the_record_and_the_command(self):
        root = self.create_tempdir().full_path
        for name in uci.DATASETS:
            with self.assertRaises(DataError) as ctx:
                uci.load_uci(name, root)
            message = str(ctx.exception)
            for dataset in uci.DATASETS:
                for path in uci.expected_paths(dataset, root):
                    self.assertIn(path, message)
            self.assertIn("https://zenodo.org/record/1161203", message)
            self.assertIn("data.tar.gz", message)
            maf = os.path.join(root, "maf")
            self.assertIn(f"tar -xzf data.tar.gz -C {maf} --strip-components=1", message)

    def test_data_dir_defaults_to_the_environment_variable(self):
        root = self.create_tempdir().full_path
        with mock.patch.dict(os.environ, {"GENMODELS_DATA_DIR": root}):
            self.assertEqual(
                uci.expected_paths("power"), [os.path.join(root, "maf", "power", "data.npy")]
            )
            with self.assertRaisesRegex(DataError, re.escape(os.path.join(root, "maf"))):
                uci.load_uci("power")

    def test_unknown_dataset(self):
        with self.assertRaisesRegex(ValueError, "Unknown UCI data set"):
            uci.load_uci("cifar10")


class PipelineTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.x = np.random.default_rng(3).normal(size=(50, 6)).astype(np.float32)

    def _batches(self, start_step, num):
        ds = uci.train_dataset(self.x, 10, seed=7, start_step=start_step)
        return [b["x"].numpy() for b in ds.take(num)]

    def test_epochs_visit_every_row_once_and_resume_exactly(self):
        batches = self._batches(0, 10)  # two epochs of 5 steps
        self.assertEqual(batches[0].shape, (10, 6))
        for epoch in (batches[:5], batches[5:]):
            rows = np.vstack(epoch)
            self.assertAllEqual(np.sort(rows, axis=0), np.sort(self.x, axis=0))
        self.assertNotAllEqual(np.vstack(batches[:5]), np.vstack(batches[5:]))
        resumed = self._batches(7, 3)
        for a, b in zip(resumed, batches[7:], strict=True):
            self.assertAllEqual(a, b)

    def test_eval_dataset_is_one_ordered_pass(self):
        batches = [b["x"].numpy() for b in uci.eval_dataset(self.x, 16)]
        self.assertEqual([len(b) for b in batches], [16, 16, 16, 2])
        self.assertAllEqual(np.vstack(batches), self.x)
