"""UCI POWER, GAS, HEPMASS, MINIBOONE and BSDS300 as preprocessed for the MAF paper.

(One cohesive job, the five data sets' readers and preprocessing side by side, hence a little
over 500 lines.)

Papamakarios, Pavlakou & Murray (2017), "Masked Autoregressive Flow for Density Estimation",
sec. 4.2 and appendix. The data are the authors' preprocessed archive, Zenodo
record 1161203 (https://zenodo.org/record/1161203, file `data.tar.gz`), which cannot be downloaded
here: the user unpacks it once into `<data_dir>/maf/` (see `UNPACK_COMMAND` and docs/uci.md):

  mkdir -p <data_dir>/maf && tar -xzf data.tar.gz -C <data_dir>/maf --strip-components=1 \\
      data/power data/gas data/hepmass data/miniboone data/BSDS300

`<data_dir>` follows `common.data.mnist`: the `data_dir` argument (config `data.data_dir`), else
`$GENMODELS_DATA_DIR`, else `~/.cache/genmodels`. Expected files (`FILES`):

  <data_dir>/maf/power/data.npy              float [2049280, 8]
  <data_dir>/maf/gas/ethylene_CO.pickle      pandas DataFrame with Time, Meth, Eth + 16 sensors
  <data_dir>/maf/hepmass/1000_train.csv      CSV with a header line, label first
  <data_dir>/maf/hepmass/1000_test.csv       same; its last column is dropped (see below)
  <data_dir>/maf/miniboone/data.npy          float [36488, 43], outliers already removed
  <data_dir>/maf/BSDS300/BSDS300.hdf5        HDF5 with train / validation / test, each [N, 63]

Preprocessing, reimplemented from the authors' loaders (github.com/gpapamak/maf, `datasets/`):
- POWER: rows shuffled with `np.random.RandomState(42)`; columns 3 (global intensity) and 1
  (global reactive power) dropped; uniform noise added from the same stream (drawn in the order
  voltage 0.01 U, gap 0.001 U, sub-meterings U on 3 columns; the time column gets none); the last
  10% of rows test, the last 10% of the rest validate; standardized with the mean and (biased)
  standard deviation of train + validation.
- GAS: columns Meth, Eth and Time dropped; then, while some column has a Pearson correlation
  above 0.98 with another, the first such column is dropped; standardized with the mean and
  unbiased (pandas) standard deviation of *all* rows; last 10% test, last 10% of the rest validate.
- HEPMASS: positive class (label 1) only, label dropped; the last column of the test file dropped
  (the authors: "the data set is messed up"); standardized with the train mean and unbiased
  standard deviation; features whose *smallest* standardized training value occurs more than 5
  times are dropped (the authors' code counts the occurrences of the smallest value,
  `sorted(Counter(feature).items())[0]`, although its comment speaks of re-occurring values);
  the last 10% of train validate.
- MINIBOONE: last 10% test, last 10% of the rest validate; standardized with the mean and biased
  standard deviation of train + validation.
- BSDS300: the stored splits as they are (8x8 patches, last pixel dropped, by the authors).
"10%" is `int(0.1 * N)` rows, as in the authors' code. Splits are float32 `[N, D]`.

GAS needs `pandas` (the file is a pandas pickle) and BSDS300 needs `h5py`: `pip install pandas`
/ `pip install h5py`, or `pip install -e '.[uci]'`. HEPMASS's CSV is parsed with NumPy.

Pipelines are the step-indexed ones of `common.data.pipelines` (`train_dataset`: the batch of
step s is a pure function of (seed, s), so a resumed run continues the exact trajectory), with
elements `{"x": float32 [B, D]}`.

Symbols: N examples, B batch size, D event size (6, 8, 21, 43, 63).

Command line (checks the files and prints the split shapes and statistics):
  python -m flows.uci --dataset=power [--data_dir=DIR]
"""

from __future__ import annotations

import os
import pickle
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from common.data import mnist, pipelines
from common.data.mnist import DataError

DATASETS = ("power", "gas", "hepmass", "miniboone", "bsds300")
#: Event size D after preprocessing (MAF paper, Table 1).
DIMENSIONS = {"power": 6, "gas": 8, "hepmass": 21, "miniboone": 43, "bsds300": 63}
#: (train, validation, test) sizes of the real data (MAF paper, appendix).
SPLIT_SIZES = {
    "power": (1_659_917, 184_435, 204_928),
    "gas": (852_174, 94_685, 105_206),
    "hepmass": (315_123, 35_013, 174_987),
    "miniboone": (29_556, 3_284, 3_648),
    "bsds300": (1_000_000, 50_000, 250_000),
}
#: Files of each data set, relative to `<data_dir>/maf/` (the archive's `data/` folder).
FILES = {
    "power": ("power/data.npy",),
    "gas": ("gas/ethylene_CO.pickle",),
    "hepmass": ("hepmass/1000_train.csv", "hepmass/1000_test.csv"),
    "miniboone": ("miniboone/data.npy",),
    "bsds300": ("BSDS300/BSDS300.hdf5",),
}
SUBDIR = "maf"
ZENODO_URL = "https://zenodo.org/record/1161203"
ARCHIVE = "data.tar.gz"
#: Unpacks the five data sets (not MNIST / CIFAR-10) of the archive into `{maf_dir}`.
UNPACK_COMMAND = (
    "mkdir -p {maf_dir} && tar -xzf data.tar.gz -C {maf_dir} --strip-components=1 "
    "data/power data/gas data/hepmass data/miniboone data/BSDS300"
)

POWER_SEED = 42  # the authors' np.random.RandomState seed
POWER_RAW_COLUMNS = 8  # gap, grp, voltage, intensity, 3 sub-meterings, time
POWER_DROPPED_COLUMNS = (3, 1)  # deleted in this order
GAS_DROPPED_COLUMNS = ("Meth", "Eth", "Time")
GAS_MAX_CORRELATION = 0.98
HEPMASS_MAX_REPEATS = 5  # a feature whose smallest value occurs more often is dropped
HELD_OUT_FRACTION = 0.1
BSDS300_SPLITS = ("train", "validation", "test")


class UciData(NamedTuple):
    """The splits of one data set, each float32 `[N, D]`."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def maf_dir(data_dir: str | None = None) -> str:
    """`<data_dir>/maf`, `data_dir` defaulting to `common.mnist.default_data_dir()`."""
    return os.path.join(data_dir or mnist.default_data_dir(), SUBDIR)


def expected_paths(name: str, data_dir: str | None = None) -> list[str]:
    """The absolute paths the loader of `name` reads.

    Raises:
      ValueError: unknown data set.
    """
    _check_name(name)
    return [os.path.join(maf_dir(data_dir), f) for f in FILES[name]]


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"Unknown UCI data set {name!r}; expected one of {', '.join(DATASETS)}.")


def _missing_error(name: str, missing: list[str], data_dir: str | None) -> DataError:
    root = maf_dir(data_dir)
    layout = "; ".join(
        f"{n}: " + ", ".join(os.path.join(root, f) for f in FILES[n]) for n in DATASETS
    )
    return DataError(
        f"{name.upper()} data not found: missing {', '.join(missing)}. The MAF paper's "
        f"preprocessed data come from Zenodo record 1161203 ({ZENODO_URL}, file {ARCHIVE}); "
        f"download it and run `{UNPACK_COMMAND.format(maf_dir=root)}` (or point --data_dir / "
        f"$GENMODELS_DATA_DIR / config data.data_dir at a folder whose maf/ holds them). "
        f"Expected files: {layout}. See docs/uci.md."
    )


# ------------------------------------------------------------------------------------------------
# Preprocessing (pure NumPy; float64 inside, float32 out).


def _tail_split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(head, tail)` with the last `int(0.1 * N)` rows as the tail (the authors' split)."""
    num_tail = int(HELD_OUT_FRACTION * x.shape[0])
    return x[: x.shape[0] - num_tail], x[x.shape[0] - num_tail :]


def _check_splits(name: str, splits: UciData) -> UciData:
    """Casts to float32 and checks D, non-empty splits and finiteness."""
    expected = DIMENSIONS[name]
    out = UciData(*(np.ascontiguousarray(s, dtype=np.float32) for s in splits))
    for split, x in out._asdict().items():
        if x.ndim != 2 or x.shape[1] != expected:
            raise DataError(
                f"{name.upper()} preprocessing gave a {split} split of shape {x.shape}, expected "
                f"[N, {expected}]: the file is not the MAF authors' {name} data."
            )
        if not len(x):
            raise DataError(f"{name.upper()}: the {split} split is empty (too few rows).")
        if not np.all(np.isfinite(x)):
            raise DataError(f"{name.upper()}: the {split} split has non-finite values.")
    return out


def _standardize(splits, mean: np.ndarray, std: np.ndarray) -> list[np.ndarray]:
    return [(x - mean) / std for x in splits]


def preprocess_power(raw: np.ndarray) -> UciData:
    """POWER from the archive's `power/data.npy` (see module docstring).

    Args:
      raw: float `[N, 8]`; it is not modified (the shuffle works on a copy).

    Returns:
      `UciData` of float32 `[., 6]` splits.

    Raises:
      DataError: `raw` is not a float `[N, 8]` array, or a split comes out empty.
    """
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.shape[1] != POWER_RAW_COLUMNS or raw.dtype.kind != "f":
        raise DataError(
            f"POWER data.npy holds {raw.dtype} {raw.shape}, expected float [N, "
            f"{POWER_RAW_COLUMNS}]."
        )
    rng = np.random.RandomState(POWER_SEED)  # legacy stream: the authors' exact draws
    data = np.array(raw, dtype=np.float64)
    rng.shuffle(data)
    num = data.shape[0]
    for column in POWER_DROPPED_COLUMNS:
        data = np.delete(data, column, axis=1)
    # Columns now: gap, voltage, sub-metering 1-3, time. Draw order as in the authors' code.
    voltage_noise = 0.01 * rng.rand(num, 1)
    gap_noise = 0.001 * rng.rand(num, 1)
    sub_metering_noise = rng.rand(num, 3)
    time_noise = np.zeros((num, 1))
    data = data + np.hstack([gap_noise, voltage_noise, sub_metering_noise, time_noise])
    rest, test = _tail_split(data)
    train, validation = _tail_split(rest)
    fit = np.vstack([train, validation])
    splits = _standardize((train, validation, test), fit.mean(axis=0), fit.std(axis=0))
    return _check_splits("power", UciData(*splits))


def preprocess_gas(columns, values: np.ndarray) -> UciData:
    """GAS from the columns of the archive's `gas/ethylene_CO.pickle` (see module docstring).

    Args:
      columns: the DataFrame's column names, `[C]`.
      values: float `[N, C]`, the DataFrame's values.

    Returns:
      `UciData` of float32 `[., 8]` splits.

    Raises:
      DataError: a column of `GAS_DROPPED_COLUMNS` is missing, the shapes disagree, or the
        cleaning does not leave 8 columns.
    """
    columns = [str(c) for c in columns]
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(columns):
        raise DataError(f"GAS: {len(columns)} column names for values of shape {values.shape}.")
    missing = [c for c in GAS_DROPPED_COLUMNS if c not in columns]
    if missing:
        raise DataError(
            f"GAS pickle lacks the column(s) {missing} (it has {columns}): not the MAF authors' "
            "ethylene_CO.pickle."
        )
    keep = [i for i, c in enumerate(columns) if c not in GAS_DROPPED_COLUMNS]
    data = values[:, keep]
    while True:
        with np.errstate(invalid="ignore", divide="ignore"):  # constant columns give NaN
            corr = np.atleast_2d(np.corrcoef(data, rowvar=False))
        # Every column correlates with itself; a count above 1 means a near-duplicate.
        counts = np.sum(corr > GAS_MAX_CORRELATION, axis=1)
        offenders = np.flatnonzero(counts > 1)
        if not len(offenders):
            break
        data = np.delete(data, offenders[0], axis=1)
    data = (data - data.mean(axis=0)) / data.std(axis=0, ddof=1)  # pandas' std is unbiased
    rest, test = _tail_split(data)
    train, validation = _tail_split(rest)
    return _check_splits("gas", UciData(train, validation, test))


def _smallest_value_count(feature: np.ndarray) -> int:
    return int(np.sum(feature == np.min(feature)))


def preprocess_hepmass(train_table: np.ndarray, test_table: np.ndarray) -> UciData:
    """HEPMASS from the parsed `1000_train.csv` and `1000_test.csv` (see module docstring).

    Args:
      train_table: float `[N_train, 1 + F]`, label first (`read_hepmass_csv`).
      test_table: float `[N_test, 1 + F + 1]`: one more column, dropped.

    Returns:
      `UciData` of float32 `[., 21]` splits.

    Raises:
      DataError: the tables' widths disagree, there are no positive examples, or the cleaning
        does not leave 21 features.
    """
    train_table = np.asarray(train_table, dtype=np.float64)
    test_table = np.asarray(test_table, dtype=np.float64)
    if train_table.ndim != 2 or test_table.ndim != 2:
        raise DataError("HEPMASS: the CSV tables must be two-dimensional.")
    train = train_table[train_table[:, 0] == 1][:, 1:]
    test = test_table[test_table[:, 0] == 1][:, 1:-1]  # the test file's bogus last column
    if train.shape[1] != test.shape[1]:
        raise DataError(
            f"HEPMASS: after dropping the label (and the test file's last column) the train CSV "
            f"has {train.shape[1]} features and the test CSV {test.shape[1]}; the MAF authors' "
            "test file has one column more than the train file."
        )
    if len(train) < 2 or not len(test):
        raise DataError("HEPMASS: too few positive-class (label 1) rows.")
    mean, std = train.mean(axis=0), train.std(axis=0, ddof=1)  # pandas' std is unbiased
    train, test = _standardize((train, test), mean, std)
    keep = [
        j
        for j in range(train.shape[1])
        if _smallest_value_count(train[:, j]) <= HEPMASS_MAX_REPEATS
    ]
    train, test = train[:, keep], test[:, keep]
    train, validation = _tail_split(train)
    return _check_splits("hepmass", UciData(train, validation, test))


def preprocess_miniboone(raw: np.ndarray) -> UciData:
    """MINIBOONE from the archive's `miniboone/data.npy` (see module docstring).

    Args:
      raw: float `[N, 43]`.

    Returns:
      `UciData` of float32 `[., 43]` splits.

    Raises:
      DataError: `raw` is not a float `[N, 43]` array, or a split comes out empty.
    """
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.shape[1] != DIMENSIONS["miniboone"] or raw.dtype.kind != "f":
        raise DataError(
            f"MINIBOONE data.npy holds {raw.dtype} {raw.shape}, expected float [N, "
            f"{DIMENSIONS['miniboone']}]."
        )
    data = raw.astype(np.float64)
    rest, test = _tail_split(data)
    train, validation = _tail_split(rest)
    fit = np.vstack([train, validation])
    splits = _standardize((train, validation, test), fit.mean(axis=0), fit.std(axis=0))
    return _check_splits("miniboone", UciData(*splits))


# ------------------------------------------------------------------------------------------------
# Files.


def _load_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy array ({type(e).__name__}: {e}).") from e


def read_hepmass_csv(path: str) -> np.ndarray:
    """Reads a HEPMASS CSV as `pandas.read_csv(path, index_col=False)` sees it, without pandas.

    The first line is a header of H names (e.g. `# label,f0,...,f26,mass`). Rows with more than H
    fields keep the first H (what `index_col=False` does with trailing delimiters); rows with
    fewer get NaN in the missing trailing columns.

    Args:
      path: the CSV file.

    Returns:
      float64 `[N, H]`.

    Raises:
      DataError: the file cannot be read, is empty, or has non-numeric or ragged rows.
    """
    try:
        with open(path) as f:
            header = f.readline()
            first = f.readline()
            num_header = len(header.rstrip("\r\n").split(","))
            num_fields = len(first.rstrip("\r\n").split(","))
            if not header.strip() or not first.strip():
                raise DataError(f"{path}: expected a header line and at least one data row.")
            f.seek(0)
            usecols = range(min(num_header, num_fields))
            table = np.loadtxt(
                f, delimiter=",", skiprows=1, usecols=usecols, ndmin=2, comments=None
            )
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: not a readable HEPMASS CSV ({type(e).__name__}: {e}).") from e
    if num_fields < num_header:
        table = np.hstack([table, np.full((len(table), num_header - num_fields), np.nan)])
    return table


def _read_gas_pickle(path: str) -> tuple[list, np.ndarray]:
    try:
        import pandas as pd
    except ImportError as e:
        raise DataError(
            f"Reading {path} (a pandas pickle) needs pandas: `pip install pandas` (or "
            "`pip install -e '.[uci]'`)."
        ) from e
    try:
        frame = pd.read_pickle(path)
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: not a pickle ({e}).") from e
    except (OSError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
        raise DataError(
            f"{path}: pandas {pd.__version__} cannot read it ({type(e).__name__}: {e}). If it is "
            "the MAF authors' file, an older pandas may (francois-rozet/uci-datasets reads it "
            "with pandas<2.0)."
        ) from e
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{path} holds a {type(frame).__name__}, expected a pandas DataFrame.")
    try:
        values = frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: the DataFrame has non-numeric columns ({e}).") from e
    return list(frame.columns), values


def _read_bsds300(path: str) -> UciData:
    try:
        import h5py
    except ImportError as e:
        raise DataError(
            f"Reading {path} (HDF5) needs h5py: `pip install h5py` (or `pip install -e '.[uci]'`)."
        ) from e
    try:
        with h5py.File(path, "r") as f:
            missing = [s for s in BSDS300_SPLITS if s not in f]
            if missing:
                raise DataError(
                    f"{path} lacks the dataset(s) {missing} (it has {sorted(f.keys())}); expected "
                    f"{', '.join(BSDS300_SPLITS)}."
                )
            splits = UciData(*(np.asarray(f[s][()]) for s in BSDS300_SPLITS))
    except (OSError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a readable HDF5 file ({type(e).__name__}: {e}).") from e
    return _check_splits("bsds300", splits)


def load_uci(name: str, data_dir: str | None = None) -> UciData:
    """Loads and preprocesses one of the MAF paper's UCI / BSDS300 data sets.

    Args:
      name: one of `DATASETS`.
      data_dir: root data directory (files under `<data_dir>/maf/`, see module docstring);
        default `common.mnist.default_data_dir()`.

    Returns:
      `UciData` of float32 `[N, D]` splits, D = `DIMENSIONS[name]`; the real files give
      `SPLIT_SIZES[name]` rows.

    Raises:
      ValueError: unknown `name`.
      DataError: a file is missing (the message names every expected path, the Zenodo record and
        the command that unpacks it), unreadable or of the wrong shape, or pandas / h5py are not
        installed for GAS / BSDS300.
    """
    paths = expected_paths(name, data_dir)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise _missing_error(name, missing, data_dir)
    logging.info("Loading %s from %s.", name.upper(), ", ".join(paths))
    if name == "power":
        return preprocess_power(_load_npy(paths[0]))
    if name == "gas":
        return preprocess_gas(*_read_gas_pickle(paths[0]))
    if name == "hepmass":
        return preprocess_hepmass(read_hepmass_csv(paths[0]), read_hepmass_csv(paths[1]))
    if name == "miniboone":
        return preprocess_miniboone(_load_npy(paths[0]))
    return _read_bsds300(paths[0])


# ------------------------------------------------------------------------------------------------
# Pipelines: the step-indexed ones of common.data.pipelines, with elements {"x": [B, D]}.


def _check_table(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"Expected a [N, D] array, got shape {x.shape}.")
    return x


def train_dataset(
    x: np.ndarray, batch_size: int, seed: int, start_step: int = 0
) -> tf.data.Dataset:
    """Infinite, step-indexed training batches `{"x": float32 [B, D]}` of `x: [N, D]`.

    The batch of step s depends only on (seed, s): a fresh permutation of the N rows per epoch of
    N // B steps (`common.data.pipelines.train_dataset`), so `start_step=k` resumes the trajectory.

    Raises:
      ValueError: bad shape or batch size, or negative `start_step`.
    """
    x = _check_table(x)
    dim = x.shape[1]
    ds = pipelines.train_dataset(x, batch_size, seed, "intensity", start_step)
    return ds.map(lambda e: {"x": tf.ensure_shape(e["image"][..., 0], [batch_size, dim])})


def eval_dataset(x: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """One in-order pass over `x: [N, D]`: `{"x": float32 [b, D]}`, the last batch possibly
    partial.

    Raises:
      ValueError: bad shape or `batch_size` < 1.
    """
    x = _check_table(x)
    return pipelines.eval_dataset(x, batch_size, "intensity").map(
        lambda e: {"x": e["image"][..., 0]}
    )


# ------------------------------------------------------------------------------------------------
# Command line.


def _define_flags() -> tuple[flags.FlagHolder, flags.FlagHolder]:
    # Defined only when run as a binary, so importing this module defines no flags.
    name = flags.DEFINE_enum("dataset", "power", list(DATASETS), "Data set to check.")
    data_dir = flags.DEFINE_string(
        "data_dir",
        None,
        "Root data directory; the MAF archive's files live in <data_dir>/maf/. Default: "
        "$GENMODELS_DATA_DIR if set, else ~/.cache/genmodels.",
    )
    return name, data_dir


def main(argv: list[str], name: str, data_dir: str | None) -> None:
    """Loads `name` and prints the split shapes with per-split mean and std ranges."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        data = load_uci(name, data_dir)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"{name.upper()} (D = {DIMENSIONS[name]}) from {maf_dir(data_dir)}:")
    for split, x in data._asdict().items():
        print(
            f"  {split}: {x.shape} {x.dtype}, column means in [{x.mean(0).min():.3f}, "
            f"{x.mean(0).max():.3f}], stds in [{x.std(0).min():.3f}, {x.std(0).max():.3f}]"
        )
    expected = SPLIT_SIZES[name]
    actual = tuple(len(x) for x in data)
    if actual != expected:
        print(f"  note: the MAF paper's sizes are {expected}; these files give {actual}.")


if __name__ == "__main__":
    _FLAGS = _define_flags()
    app.run(lambda argv: main(argv, _FLAGS[0].value, _FLAGS[1].value))
