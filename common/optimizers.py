"""The optimizer factory every package uses: tf_keras Adam or RMSProp from a config block.

tf_keras optimizers, not Sonnet's: Sonnet 2 optimizers refuse every `tf.distribute` strategy but
its own replicators, so they cannot run under `MultiWorkerMirroredStrategy`
(`--config.strategy=multi_worker`). XLA compilation of the update is left to the training loop
(`jit_compile=False` here).
"""

from __future__ import annotations

import ml_collections
import tf_keras

OPTIMIZERS = ("adam", "rmsprop")
SCHEDULES = ("constant", "cosine")


def learning_rate_schedule(opt: ml_collections.ConfigDict, num_steps: int):
    """The learning rate of `opt.schedule`: `constant` (the float `opt.learning_rate`) or
    `cosine` (Keras' `CosineDecay` from `opt.learning_rate` over `num_steps` steps to
    `opt.final_fraction` of it).

    Raises:
      ValueError: another schedule.
    """
    if opt.schedule == "constant":
        return opt.learning_rate
    if opt.schedule == "cosine":
        return tf_keras.optimizers.schedules.CosineDecay(
            opt.learning_rate, num_steps, alpha=opt.final_fraction
        )
    raise ValueError(
        f"Unknown optimizer.schedule {opt.schedule!r}; expected one of {', '.join(SCHEDULES)}."
    )


def make_optimizer(
    opt: ml_collections.ConfigDict, learning_rate=None
) -> tf_keras.optimizers.Optimizer:
    """The optimizer of a config's `optimizer` block.

    Fields read: `name` (`adam` when absent, or `rmsprop`), `learning_rate` (unless
    `learning_rate` is given: a float or a `tf_keras` schedule), `epsilon`; for Adam `beta_1`
    and `beta_2` (Keras' defaults 0.9 / 0.999 when absent); for RMSProp `rho`, `momentum` and
    `centered`; optional `global_clipnorm` (rescale the gradients of all variables together to
    at most this global L2 norm; absent, 0 or None: no clipping).

    Raises:
      ValueError: an unknown `name`.
    """
    name = opt.get("name", "adam")
    lr = opt.learning_rate if learning_rate is None else learning_rate
    clip = {"global_clipnorm": opt.get("global_clipnorm", None) or None}
    if name == "adam":
        return tf_keras.optimizers.Adam(
            lr,
            beta_1=opt.get("beta_1", 0.9),
            beta_2=opt.get("beta_2", 0.999),
            epsilon=opt.epsilon,
            jit_compile=False,
            **clip,
        )
    if name == "rmsprop":
        return tf_keras.optimizers.RMSprop(
            lr,
            rho=opt.rho,
            momentum=opt.momentum,
            epsilon=opt.epsilon,
            centered=opt.centered,
            jit_compile=False,
            **clip,
        )
    raise ValueError(f"optimizer.name must be one of {OPTIMIZERS}, got {name!r}.")
