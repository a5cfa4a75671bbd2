"""Stacked Capsule Autoencoders (Kosiorek, Sabour, Teh & Hinton 2019). In progress.

Built so far (tested, not yet trained end to end):
- `scae.geometry`: capsule poses, raw network outputs -> affine transforms, decomposition,
  composition (paper eq. 5's `OV @ OP`);
- `scae.data`: MNIST on a 40x40 canvas with the reference code's random shifts, validation
  carved from the training split;
- `scae.parts`: the Part Capsule Autoencoder: `PartEncoder` (CNN + attention pooling) and
  `TemplateDecoder` (learned templates placed by part poses; per-pixel mixture likelihood,
  paper eq. 4).

Still to come (its issue): the Object Capsule Autoencoder (Set Transformer encoder, capsule
decoder, part likelihood), the sparsity losses, training and evaluation binaries.
"""

from scae.geometry import PoseParams, compose, decompose, raw_to_affine, to_homogeneous
from scae.parts import PartCapsules, PartEncoder, TemplateDecoder

__all__ = [
    "PartCapsules",
    "PartEncoder",
    "PoseParams",
    "TemplateDecoder",
    "compose",
    "decompose",
    "raw_to_affine",
    "to_homogeneous",
]
