"""Stacked Capsule Autoencoders (Kosiorek, Sabour, Teh & Hinton 2019). In progress: every part
is built, tested and trains end to end; the paper's accuracy is not reached yet (README).

- `scae.geometry`: capsule poses, raw network outputs -> affine transforms, composition
  (paper eq. 5's `OV @ OP`);
- `scae.data`: MNIST on a 40x40 canvas with the reference code's random shifts, validation
  carved from the training split, and the affNIST-range affine test;
- `scae.parts`: the Part Capsule Autoencoder (`PartEncoder`, `TemplateDecoder`, eq. 4);
- `scae.set_transformer`, `scae.objects`: the Object Capsule Autoencoder (Set Transformer,
  capsule decoder, part likelihood eqs. 5-6, sparsity losses of sec. 2.3);
- `scae.model`, `scae.experiment`, `scae.clustering`, `scae.evaluation`, `scae.plots`: the whole
  model, training task, k-means + Hungarian accuracy and linear probes, pictures;
- binaries `scae.train`, `scae.evaluate`.
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
