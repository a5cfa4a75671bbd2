"""Normalizing flows as TFP bijectors (Rezende & Mohamed 2015; Germain et al.
2015; Papamakarios et al. 2017; Kingma et al. 2016; Dinh et al. 2017).

- `flows.bijectors`, `flows.made`, `flows.models`: planar, radial, MADE, MAF, IAF, RealNVP.
- `flows.experiment`: MNIST density estimation (MAF paper) and the 2-D toys; `flows.toy`: the
  2-D densities and the energies U1-U4.
- Binaries: `python -m flows.train`, `python -m flows.evaluate`.

Work in progress (issue 3).
"""

from flows.bijectors import (
    PLANAR_INVERSE_ITERATIONS,
    Planar,
    PlanarLayer,
    Radial,
    RadialLayer,
)
from flows.experiment import FlowDensity
from flows.made import MADE
from flows.models import (
    FLOW_NAMES,
    CouplingConditioner,
    conditional_kwargs,
    make_density,
    make_flow,
    set_batch_norm_statistics,
    with_training,
)

__all__ = [
    "FLOW_NAMES",
    "MADE",
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
