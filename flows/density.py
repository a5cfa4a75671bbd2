"""The flow density every flows task trains: `FlowDensity` and `build_model(config)`.

`build_model` turns a config's `model` block into `flows.make_density(...)` (a standard-normal
base, or a MADE MoG base) wrapped in `FlowDensity`, which picks the batch-norm mode (minibatch
statistics in training, stored statistics in evaluation). Symbols: B batch, D event size.
"""

from __future__ import annotations

import ml_collections
import sonnet as snt
import tensorflow as tf
import tensorflow_probability as tfp

from flows import models, toy, uci
from flows.batch_norm import set_batch_norm_statistics, with_training

tfd = tfp.distributions


MNIST_EVENT_SIZE = 28 * 28
ACTIVATIONS = {"relu": tf.nn.relu, "tanh": tf.tanh}
MNIST_FLOWS = ("maf", "realnvp", "made", "made_mog", "maf_mog")
MNIST_IMAGE_SHAPE = (28, 28, 1)  # realnvp's checkerboard / channel masks


class FlowDensity(snt.Module):
    """A flow density from `flows.make_density` (standard-normal base, or a MADE MoG base).

    Batch norm (MAF, RealNVP): `log_prob(x, training=True)` normalizes with the minibatch
    statistics of `x` (and updates the moving averages), the training step's density; every
    other call uses the stored statistics, an exact bijection. Sampling has no minibatch to
    normalize, so `sample` and `sample_and_log_prob` use the stored statistics in both modes.
    Both densities share every variable.
    """

    def __init__(self, density: tfd.TransformedDistribution, name: str | None = None):
        super().__init__(name=name)
        self.flow = density.bijector
        self.event_size = int(density.event_shape[-1])
        self.density = with_training(density, False)
        self.training_density = with_training(density, True)

    @staticmethod
    def _tfp_seed(seed: tf.Tensor) -> tf.Tensor:
        """TFP takes int32 stateless seeds; the loop's are int64 (the cast wraps)."""
        return tf.cast(seed, tf.int32)

    def log_prob(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        """`[B, D]` -> `[B]` log-density in nats."""
        return (self.training_density if training else self.density).log_prob(x)

    def sample(self, num: int, seed: tf.Tensor, training: bool = False) -> tf.Tensor:
        """`[num, D]` samples (the sampling direction: D sequential passes for MAF), with the
        stored batch-norm statistics whatever `training` says (see the class docstring)."""
        del training
        return self.density.sample(num, seed=self._tfp_seed(seed))

    def sample_and_log_prob(
        self, num, seed: tf.Tensor, training: bool = False
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """`([num, D], [num])`: samples and their log-density from the forward log-det (no
        inverse is computed, so planar flows need no root finding); stored batch-norm statistics
        in both modes, so the log-density is that of the samples' own map."""
        del training
        return self.density.experimental_sample_and_log_prob(num, seed=self._tfp_seed(seed))

    @property
    def has_batch_norm(self) -> bool:
        return any("moving_mean" in v.name for v in self.variables)

    def set_batch_norm_statistics(self, x: tf.Tensor) -> None:
        """Stores the batch-norm statistics of the data `x: [N, D]` (MAF code); a no-op
        without batch norm."""
        if self.has_batch_norm:
            set_batch_norm_statistics(self.flow, x)

    @property
    def weight_matrices(self) -> list[tf.Variable]:
        """Trainable rank-2 variables (dense weights; not biases or batch-norm parameters)."""
        return [v for v in self.trainable_variables if v.shape.rank == 2]


def event_size(config: ml_collections.ConfigDict) -> int:
    if config.task == "mnist":
        return MNIST_EVENT_SIZE
    if config.task == "toy":
        return 2
    if config.task == "uci":
        uci_name = config.data.dataset
        if uci_name not in uci.DIMENSIONS:
            raise ValueError(f"data.dataset must be one of {uci.DATASETS}, got {uci_name!r}.")
        return uci.DIMENSIONS[uci_name]
    raise ValueError(f"config.task must be mnist, uci or toy, got {config.task!r}.")


def build_model(config: ml_collections.ConfigDict) -> FlowDensity:
    """The model of `config` with all its variables created.

    `model.num_components` reaches the MADE MoG densities (made_mog, maf_mog) only;
    `model.realnvp_mask` reaches realnvp only (other flows ignore it), the image masks with the
    MNIST image shape; `model.made_log_precision` reaches the Gaussian MADEs of made, maf, iaf
    and maf_mog only (realnvp and the MADE MoG have none). Configs without these fields (toys) get
    the defaults.

    Raises:
      ValueError: for an unknown task, flow or activation, or arguments the flow does not take.
    """
    m = config.model
    if m.activation not in ACTIVATIONS:
        raise ValueError(
            f"model.activation must be one of {sorted(ACTIVATIONS)}, got {m.activation!r}."
        )
    batch_norm = m.batch_norm
    if config.task == "toy" and config.target in toy.ENERGIES:
        if batch_norm:
            raise ValueError(
                "model.batch_norm cannot be used with an energy target: reverse-KL training "
                "has no data batch to normalize."
            )
        if m.flow in models.MOG_DENSITY_NAMES:
            raise ValueError(
                f"model.flow={m.flow!r} cannot be used with an energy target: MADE MoG samples "
                "are not reparameterized, so reverse-KL gradients would be wrong."
            )
        batch_norm = False if m.flow in ("maf", "realnvp") else None
    extra = {}
    if m.flow in models.MOG_DENSITY_NAMES:
        extra["num_components"] = m.get("num_components", models.DEFAULT_NUM_COMPONENTS)
    if m.get("made_log_precision", False) and m.flow in ("made", "maf", "iaf", "maf_mog"):
        extra["made_log_precision"] = (
            True  # the MAF code's MADE output (flows.conditioners._LogPrecision)
        )
    mask = m.get("realnvp_mask", "halves")
    if m.flow == "realnvp" and mask != "halves":
        extra["mask"] = mask
        if mask in models.IMAGE_MASKS:
            extra["image_shape"] = MNIST_IMAGE_SHAPE if config.task == "mnist" else None
    density = models.make_density(
        m.flow,
        event_size(config),
        m.num_layers,
        tuple(m.hidden_units),
        batch_norm=batch_norm,
        activation=ACTIVATIONS[m.activation],
        hidden_degrees=m.hidden_degrees,
        log_scale_bound=m.log_scale_bound,
        seed=config.seed,
        **extra,
    )
    return FlowDensity(density, name="flow_density")
