"""VAE, IWAE and the MIWAE / CIWAE / PIWAE estimators.

Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders";
Rainforth et al. (2018), "Tighter Variational Bounds are Not Necessarily Better".

- `vae.estimators`: bounds as pure functions of `[K, B]` log importance weights.
- `vae.modules`: the IWAE paper's MLP architectures as Sonnet modules, with a
  diagonal-Gaussian or a flow posterior (planar, radial: Rezende & Mohamed 2015;
  IAF: Kingma et al. 2016).
- `vae.experiment`: the training task, test log-likelihood, active units, gradient SNR.
- Binaries: `python -m vae.train`, `python -m vae.evaluate`.
"""

from vae.estimators import (
    ciwae_bound,
    elbo,
    iwae_bound,
    miwae_bound,
    piwae_objectives,
    training_objectives,
)
from vae.flow_posteriors import POSTERIORS, FlowPosteriorMLP
from vae.modules import IWAEModel, make_model

__all__ = [
    "POSTERIORS",
    "FlowPosteriorMLP",
    "IWAEModel",
    "ciwae_bound",
    "elbo",
    "iwae_bound",
    "make_model",
    "miwae_bound",
    "piwae_objectives",
    "training_objectives",
]
