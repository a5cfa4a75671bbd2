"""Configs for `flows.train` on the 2-D targets of `flows.toy`.

  python -m flows.train --config=flows/configs/toy.py:two_moons
  python -m flows.train --config=flows/configs/toy.py:u1 --config.model.num_layers=8
  python -m flows.train --config=flows/configs/toy.py:u2,smoke      # seconds, for tests

The variant is a target name, optionally followed by `,smoke`:
  two_moons, eight_gaussians, checkerboard, pinwheel: maximum likelihood on fresh samples every
      step; MAF(8) with MADEs of two hidden layers of 64 ReLU units and batch norm, Adam 1e-3,
      batch 256, 10,000 steps (a couple of minutes on a CPU).
  u1, u2, u3, u4: reverse KL to exp(-U) / Z (Rezende & Mohamed 2015, Fig. 3) with a planar flow
      of K = 32 layers (their largest), batch 256, inverse temperature annealed as
      beta_t = min(1, 0.01 + t / 10,000) (the schedule quoted for the paper's MNIST runs; from
      memory, unverified), Adam 1e-3, 20,000 steps (the paper: 500,000 RMSProp updates, M).
      `--config.model.flow=radial` gives radial flows.
"""

import ml_collections
from ml_collections import config_dict

from common import training
from flows import toy


def get_config(variant: str = "two_moons") -> ml_collections.ConfigDict:
    """Returns the config of `variant` (`<target>` or `<target>,smoke`).

    Raises:
      ValueError: for an unknown target or suffix.
    """
    target, _, suffix = variant.partition(",")
    if target not in toy.TARGETS or suffix not in ("", "smoke"):
        raise ValueError(
            f"Unknown variant {variant!r}; expected <target>[,smoke] with target one of "
            f"{', '.join(toy.TARGETS)}."
        )
    energy = target in toy.ENERGIES
    c = training.experiment_config("flows.experiment", variant)
    c.task = "toy"
    c.target = target

    c.model = ml_collections.ConfigDict()
    c.model.flow = "planar" if energy else "maf"  # planar | radial | maf | realnvp | made | iaf
    c.model.num_layers = 32 if energy else 8
    c.model.hidden_units = () if energy else (64, 64)  # empty for planar / radial
    c.model.activation = "relu"
    c.model.hidden_degrees = "sequential"
    # None: the flow's default (batch norm for maf / realnvp on densities; never for energies).
    c.model.batch_norm = config_dict.placeholder(bool)
    c.model.log_scale_bound = config_dict.placeholder(float)

    c.objective = ml_collections.ConfigDict()
    c.objective.initial_beta = 0.01  # energies only: beta_t = min(1, 0.01 + t / anneal_steps)
    c.objective.anneal_steps = 10_000 if energy else 0  # 0: no annealing

    c.batch_size = 256
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 1e-3
    c.optimizer.beta_1 = 0.9
    c.optimizer.beta_2 = 0.999
    c.optimizer.epsilon = 1e-8

    c.loop = training.loop_config()
    c.loop.num_steps = 20_000 if energy else 10_000
    c.loop.log_every = 500
    c.loop.summary_every = 100
    c.loop.image_every = 2_000
    c.loop.eval_every = 2_000
    c.loop.checkpoint_every = 2_000

    c.eval = ml_collections.ConfigDict()
    c.eval.num_samples = 10_000  # held-out samples (densities) or samples of q (energies)
    c.eval.after_training = True  # metrics.json, density.png and samples.png at the end

    if suffix == "smoke":
        c.model.num_layers = 4 if energy else 2
        c.model.hidden_units = () if energy else (16,)
        c.batch_size = 64
        c.optimizer.learning_rate = 1e-2
        c.objective.anneal_steps = 0
        c.loop.num_steps = 60
        c.loop.log_every = 20
        c.loop.summary_every = 20
        c.loop.image_every = 60
        c.loop.eval_every = 30
        c.loop.checkpoint_every = 30
        c.eval.num_samples = 1_000
    return c
