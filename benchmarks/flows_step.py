r"""Training steps per second of MAF(K) on MNIST-sized input: this project vs TFP vs PyTorch.

One step = the mean negative log-likelihood of a batch under MAF(K) (Papamakarios et al. 2017:
K MADEs with reversed orders and batch norm after each, minibatch statistics), its gradients
w.r.t. all variables, and an Adam(1e-4) update. Defaults: D = 784, two hidden layers of 1024
ReLU units per MADE (the MAF code's MNIST models), K = 5, batch 100 (the MAF paper's MNIST
setup). Inputs are random normal `[B, D]`: the cost of these dense MADEs does not depend on
the values.

Models (`--models`):
  ours:       `flows.make_density("maf", ...)` in training mode (`flows.with_training`:
              minibatch batch norm), modes eager / function (tf.function) / xla
              (jit_compile=True).
  tfp:        the stock TFP stack: `tfb.MaskedAutoregressiveFlow(tfb.AutoregressiveNetwork(...))`
              with left-to-right / right-to-left orders and `tfb.BatchNormalization`, same modes.
  nflows:     PyTorch `nflows` (MaskedAffineAutoregressiveTransform, BatchNorm,
              ReversePermutation); only if importable.
  normflows:  PyTorch `normflows` (Reverse(MaskedAffineAutoregressive), Permute), no batch
              norm; only if importable.
PyTorch modes (`--torch_modes`): eager, and compile (`torch.compile` of the loss, so its
forward and backward graphs are compiled; the optimizer update stays eager).

Compare like with like: TF eager with PyTorch eager, and compiled with compiled
(`function`/`xla` with `compile`); a `function` row set against an eager PyTorch row mixes a
graph with eager execution.
PyTorch rows use the same MADE sizes (their `num_blocks` = number of hidden layers - 1). Install
them in an environment of their own and point `--torch_site_packages` at it:
  python3 -m venv /tmp/torch-env && /tmp/torch-env/bin/pip install torch nflows normflows
  python benchmarks/flows_step.py \
      --torch_site_packages=/tmp/torch-env/lib/python3.11/site-packages
PyTorch libraries are never dependencies of this project: a model that does not import is
skipped with a message.

Each cell: `--warmup` untimed steps (tracing/compilation), then `--repeats` timed runs of
`--steps` steps; the median rate is printed.

Example (quick):
  python benchmarks/flows_step.py --event_size=16 --hidden_units=32 --steps=5 --repeats=1
Full table (MAF paper size):
  python benchmarks/flows_step.py
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable

import _timing  # benchmarks/, the script's folder
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras
from absl import app, flags

import flows

tfb = tfp.bijectors
tfd = tfp.distributions

TF_MODELS = ("ours", "tfp")
TORCH_MODELS = ("nflows", "normflows")
MODES = ("eager", "function", "xla")
TORCH_MODES = ("eager", "compile")

_MODELS = flags.DEFINE_list(
    "models", list(TF_MODELS + TORCH_MODELS), f"Models to run: {TF_MODELS + TORCH_MODELS}."
)
_MODES = flags.DEFINE_list(
    "modes",
    ["function", "xla"],
    "TF execution modes: eager, function (tf.function), xla (tf.function(jit_compile=True)).",
)
_EVENT_SIZE = flags.DEFINE_integer("event_size", 784, "D (784 = MNIST).")
_HIDDEN = flags.DEFINE_list(
    "hidden_units",
    ["1024", "1024"],
    "Units of each MADE's hidden layers (the MAF code trains MNIST with two layers of 1024).",
)
_TORCH_MODES = flags.DEFINE_list(
    "torch_modes",
    ["eager", "compile"],
    "PyTorch execution modes: eager, compile (torch.compile of the loss).",
)
_TORCH_SITE = flags.DEFINE_string(
    "torch_site_packages",
    "",
    "A site-packages folder with torch / nflows / normflows (a separate environment: PyTorch is "
    "never a dependency of this project). Appended to sys.path, after this environment's own.",
)
_LAYERS = flags.DEFINE_integer("num_layers", 5, "K, the number of MADEs.")
_BATCH = flags.DEFINE_integer("batch_size", 100, "B.")
_STEPS = flags.DEFINE_integer("steps", 50, "Timed training steps per repeat.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps before timing.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats per cell; the median is reported.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the inputs and weights.")


def _tfp_maf(d: int, hidden: list[int], num_layers: int) -> tfd.Distribution:
    """MAF(K) from stock TFP parts (TFP's training-mode batch-norm log-det is off, see
    flows/README.md; irrelevant for speed)."""
    bijectors = []
    for k in range(num_layers):
        made = tfb.AutoregressiveNetwork(
            params=2,
            event_shape=[d],
            hidden_units=list(hidden),
            activation="relu",
            input_order="left-to-right" if k % 2 == 0 else "right-to-left",
            # Smaller initial weights than Glorot: with two hidden layers of 1024 the default
            # initial log-scales overflow the loss to inf through 5 layers (speed is the same).
            kernel_initializer=tf_keras.initializers.VarianceScaling(0.1),
        )
        bijectors.append(tfb.MaskedAutoregressiveFlow(made))
        bijectors.append(tfb.BatchNormalization(training=True))
    base = tfd.Independent(tfd.Normal(tf.zeros([d]), tf.ones([d])), 1)
    return tfd.TransformedDistribution(base, tfb.Chain(bijectors))


def _hidden_units() -> list[int]:
    return [int(h) for h in _HIDDEN.value]


def _tf_step(model: str, mode: str, x: tf.Tensor) -> Callable[[], tf.Tensor]:
    d, hidden, num_layers = _EVENT_SIZE.value, _hidden_units(), _LAYERS.value
    if model == "ours":
        # Training mode: minibatch batch-norm statistics, as in a training step.
        density = flows.with_training(
            flows.make_density("maf", d, num_layers, hidden, seed=_SEED.value), True
        )
    else:
        density = _tfp_maf(d, hidden, num_layers)
    density.log_prob(x)  # Creates the lazily built Keras variables outside tf.function.
    variables = density.trainable_variables
    optimizer = tf_keras.optimizers.Adam(1e-4)
    optimizer.build(variables)

    def step():
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(density.log_prob(x))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    if mode == "eager":
        return step
    return tf.function(step, jit_compile=(mode == "xla"))


def _torch_step(model: str, x_np: np.ndarray, mode: str) -> Callable[[], float]:
    import torch

    torch.manual_seed(_SEED.value)
    d, num_layers = _EVENT_SIZE.value, _LAYERS.value
    if len(set(_hidden_units())) != 1:
        raise ValueError("nflows / normflows MADEs have hidden layers of one width.")
    # Their MADE: an input layer, `num_blocks` hidden-to-hidden layers, an output layer.
    hidden, num_blocks = _hidden_units()[0], len(_hidden_units()) - 1
    x = torch.as_tensor(x_np)
    if model == "nflows":
        from nflows import distributions, transforms
        from nflows import flows as nflows_flows

        parts = []
        for _ in range(num_layers):
            parts += [
                transforms.MaskedAffineAutoregressiveTransform(
                    features=d,
                    hidden_features=hidden,
                    num_blocks=num_blocks,
                    use_residual_blocks=False,
                ),
                transforms.BatchNorm(features=d),
                transforms.ReversePermutation(features=d),
            ]
        net = nflows_flows.Flow(
            transforms.CompositeTransform(parts), distributions.StandardNormal(shape=[d])
        )
        loss_fn = lambda: -net.log_prob(x).mean()
    else:
        import normflows as nf

        parts = []
        for _ in range(num_layers):
            parts += [
                # Reverse: the density direction in one pass (MAF). Unwrapped, normflows scores
                # data with the D-pass inverse (the IAF direction), which runs out of memory here.
                nf.flows.Reverse(
                    nf.flows.MaskedAffineAutoregressive(d, hidden, num_blocks=num_blocks)
                ),
                nf.flows.Permute(d, mode="swap"),
            ]
        net = nf.NormalizingFlow(nf.distributions.DiagGaussian(d), parts)
        loss_fn = lambda: net.forward_kld(x)
    net.train()
    if mode == "compile":
        loss_fn = torch.compile(loss_fn)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def _rate(step: Callable[[], object], what: str) -> float:
    return _timing.median_steps_per_second(
        lambda i: step(), _WARMUP.value, _STEPS.value, _REPEATS.value, what
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if _TORCH_SITE.value:
        if not os.path.isdir(_TORCH_SITE.value):
            raise app.UsageError(f"--torch_site_packages: no folder {_TORCH_SITE.value!r}.")
        sys.path.append(_TORCH_SITE.value)  # After ours: our numpy / TF stay the ones imported.
    models = list(_MODELS.value)
    bad = set(models) - set(TF_MODELS + TORCH_MODELS)
    if bad:
        raise app.UsageError(f"--models got {sorted(bad)}; allowed: {TF_MODELS + TORCH_MODELS}.")
    bad = set(_MODES.value) - set(MODES)
    if bad:
        raise app.UsageError(f"--modes got {sorted(bad)}; allowed: {MODES}.")
    bad = set(_TORCH_MODES.value) - set(TORCH_MODES)
    if bad:
        raise app.UsageError(f"--torch_modes got {sorted(bad)}; allowed: {TORCH_MODES}.")
    try:
        hidden = _hidden_units()
    except ValueError as e:
        raise app.UsageError(f"--hidden_units must be integers: {e}") from e
    if not hidden or min([_EVENT_SIZE.value, _LAYERS.value, _BATCH.value, *hidden]) < 1:
        raise app.UsageError("--event_size, --hidden_units, --num_layers, --batch_size >= 1.")
    _timing.check_flags(_STEPS.value, _REPEATS.value, _WARMUP.value)
    modes = [m for m in MODES if m in _MODES.value]

    _timing.print_machine()
    print(
        f"MAF({_LAYERS.value}), D = {_EVENT_SIZE.value}, hidden {hidden}, "
        f"B = {_BATCH.value}; steps/s = median of {_REPEATS.value} x {_STEPS.value} steps after "
        f"{_WARMUP.value} warm-up steps; step = NLL + grads + Adam."
    )
    x_np = np.random.default_rng(_SEED.value).standard_normal(
        (_BATCH.value, _EVENT_SIZE.value), dtype=np.float32
    )
    x = tf.constant(x_np)
    print(f"{'model':<10} {'mode':<9} {'steps/s':>9}")
    print("-" * 30)
    for model in models:
        if model in TF_MODELS:
            for mode in modes:
                tf.random.set_seed(_SEED.value)
                rate = _rate(_tf_step(model, mode, x), f"{model} {mode}")
                print(f"{model:<10} {mode:<9} {rate:9.2f}", flush=True)
            continue
        missing = [m for m in ("torch", model) if importlib.util.find_spec(m) is None]
        if missing:
            print(f"{model:<10} skipped: {', '.join(missing)} not importable (not a dependency)")
            continue
        for mode in [m for m in TORCH_MODES if m in _TORCH_MODES.value]:
            try:
                rate = f"{_rate(_torch_step(model, x_np, mode), f'{model} {mode}'):9.2f}"
            except Exception as e:  # A third-party API change must not hide the other rows.
                rate = f"failed: {type(e).__name__}: {e}"
            print(f"{model:<10} {mode:<9} {rate}", flush=True)
    print("(steps/s; higher is better)")


if __name__ == "__main__":
    app.run(main)
