"""Normalizing flows as TFP bijectors (Rezende & Mohamed 2015; Germain et al.
2015; Papamakarios et al. 2017; Kingma et al. 2016; Dinh et al. 2017).

Work in progress (issue 3).
"""

from flows.bijectors import (
    PLANAR_INVERSE_ITERATIONS,
    Planar,
    PlanarLayer,
    Radial,
    RadialLayer,
)
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
