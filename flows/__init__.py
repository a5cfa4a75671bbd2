"""Normalizing flows as TFP bijectors (Rezende & Mohamed 2015; Germain et al.
2015; Papamakarios et al. 2017; Kingma et al. 2016; Dinh et al. 2017).

- `flows.models`: planar, radial, MADE, MAF, IAF, RealNVP (alternating halves or odd/even
  coordinates for vectors, checkerboard / channel masks for images). The planar / radial
  bijectors and the MADE network live in `common.bijectors` and `common.made` (re-exported
  here) because `vae` uses them too.
- `flows.one_pass`: TFP's MAF and RealNVP bijectors with one network pass per `log_prob`.
- `flows.mog`: MADE MoG (mixture-of-Gaussians conditionals), alone or as the base of MAF MoG.
- `flows.density`: `FlowDensity`, the density every task trains, built from a config.
- Experiments: `flows.data` (MNIST dequantized, logit space, bits/pixel), `flows.uci` (UCI /
  BSDS300), `flows.tasks` (MNIST and UCI density estimation), `flows.toy` and `flows.toy_task`
  (2-D densities and the energies U1-U4), `flows.early_stopping`, `flows.evaluation`, and
  `flows.experiment` (the wiring `common.training` and the binaries call).
- Binaries: `python -m flows.train`, `python -m flows.evaluate`.
"""

from common.bijectors import (
    PLANAR_INVERSE_ITERATIONS,
    Planar,
    PlanarLayer,
    Radial,
    RadialLayer,
)
from common.made import MADE
from flows.batch_norm import set_batch_norm_statistics, with_training
from flows.conditioners import CouplingConditioner, conditional_kwargs
from flows.density import FlowDensity
from flows.models import (
    DEFAULT_NUM_COMPONENTS,
    DENSITY_NAMES,
    FLOW_NAMES,
    MOG_DENSITY_NAMES,
    REALNVP_MASKS,
    make_density,
    make_flow,
)
from flows.mog import MADEMoG, MoGParams

__all__ = [
    "DEFAULT_NUM_COMPONENTS",
    "DENSITY_NAMES",
    "FLOW_NAMES",
    "MADE",
    "MOG_DENSITY_NAMES",
    "REALNVP_MASKS",
    "MADEMoG",
    "MoGParams",
    "PLANAR_INVERSE_ITERATIONS",
    "CouplingConditioner",
    "FlowDensity",
    "Planar",
    "PlanarLayer",
    "Radial",
    "RadialLayer",
    "conditional_kwargs",
    "make_density",
    "make_flow",
    "set_batch_norm_statistics",
    "with_training",
]
