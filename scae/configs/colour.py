"""Configs for `scae.train` on SVHN and CIFAR-10 (Kosiorek et al. 2019, sec. 4), via TFDS.

  python -m scae.train --config=scae/configs/colour.py:svhn
  python -m scae.train --config=scae/configs/colour.py:cifar10

TFDS must be able to provide `svhn_cropped` / `cifar10` (this project's machine cannot download
them: prepare them elsewhere with `tfds build`, then point --config.data.data_dir at the
`tensorflow_datasets` folder). The pipeline is tested with `tfds.testing.mock_data`.

Variants:
  svhn:     the paper's SVHN sizes: 24 part and 32 object capsules, 14x14x3 templates; the
            encoder reads the raw 32x32 image and the templates explain its Sobel edges.
  cifar10:  the paper's CIFAR-10 sizes: 32 part and 64 object capsules, 14x14x3 templates, the
            same input and target.
  smoke:    tiny, SVHN-shaped, for tests.
Everything the paper does not state (optimizer, sparsity weights, steps) is the `paper` MNIST
variant's, i.e. the released MNIST script's (scae/configs/mnist.py).
"""

import ml_collections

from scae.configs import mnist

VARIANTS = ("svhn", "cifar10", "smoke")


def get_config(variant: str = "svhn") -> ml_collections.ConfigDict:
    """The config of `variant` (module docstring).

    Raises:
      ValueError: an unknown variant.
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}.")
    c = mnist.get_config("smoke" if variant == "smoke" else "paper")
    c.variant = variant
    c.data.dataset = "cifar10" if variant == "cifar10" else "svhn_cropped"
    c.model.colorize_templates = True  # each part's colour from its special features
    c.eval.num_train_images = 0 if variant != "smoke" else c.eval.num_train_images
    if variant == "svhn":
        c.model.num_parts, c.model.num_objects = 24, 32  # paper sec. 4
        c.model.template_size = 14
    elif variant == "cifar10":
        c.model.num_parts, c.model.num_objects = 32, 64  # paper sec. 4
        c.model.template_size = 14
    else:
        c.model.template_size = 6
        c.data.validation_size = 10
        c.eval.num_validation_images = 0
        c.eval.num_train_images = 0
        c.eval.num_test_images = 0
        c.eval.batch_size = 16
    return c
