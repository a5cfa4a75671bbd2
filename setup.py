"""genmodels: TF2 + Sonnet 2 + TFP reimplementations of deep generative models."""

import setuptools

setuptools.setup(
    name="genmodels",
    version="0.1.0",
    description=(
        "Faithful, tested TensorFlow 2 / Sonnet 2 / TFP reimplementations of "
        "VAE/IWAE, normalizing flows, AIR, DRAW and SCAE."
    ),
    python_requires=">=3.10",
    packages=setuptools.find_packages(
        include=["common*", "vae*", "flows*", "air*", "draw*", "scae*"]
    ),
    install_requires=[
        # tf-keras depends on `tensorflow`; never list `tensorflow-cpu` too.
        "tensorflow>=2.21,<2.22",
        "tf-keras>=2.21,<2.22",
        "tensorflow-probability>=0.25,<0.26",
        "dm-sonnet==2.0.2",
        # TF 2.21 does not install TensorBoard, and tf.summary needs it.
        "tensorboard>=2.20",
        "absl-py>=2.1",
        "ml-collections>=1.0",
        "tensorflow-datasets>=4.9",
        "numpy>=1.26",
        "scipy>=1.11",  # scae.clustering: Hungarian matching
        "scikit-learn>=1.4",  # scae.clustering: k-means
        "matplotlib>=3.8",  # flows.toy figures
        "tqdm>=4.66",
        # TFP's version check imports distutils (TFP #1693).
        "setuptools",
    ],
    extras_require={
        # The MAF paper's UCI data (flows.uci): GAS is a pandas pickle, BSDS300 an HDF5 file.
        "uci": ["pandas>=1.5", "h5py>=3.8"],
        # With the uci extra, so that the GAS and BSDS300 loaders are tested too.
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            "ruff>=0.6",
            "pandas>=1.5",
            "h5py>=3.8",
        ],
    },
)
