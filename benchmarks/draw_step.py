r"""Training steps per second of DRAW (Gregor et al. 2015) on 28x28 binary images, and the share
of a step spent in the Gaussian filterbank attention.

One step = the negative ELBO of `draw.model.DRAW` on a batch, its gradients w.r.t. all variables
and an Adam update, with the sizes of a config variant (`--variant`, default `paper`: T = 64,
LSTMs of 256, 100 latent units, 2x2 read, 5x5 write). Modes: eager, function (`tf.function`),
xla (`jit_compile=True`). Inputs are random binary `[B, 28, 28]` images.

The attention share: the same T reads and writes (filterbank construction, read of `[x, x_hat]`,
write of the patch), forward and backward, timed alone in the same mode on random window
parameters, divided by the step time.

The baseline (`--keras_baseline`, float32 only): the same model written as a plain Keras port
(`benchmarks/_keras_draw.py`: `tf_keras.layers.LSTMCell`, `Dense`, a Python loop over the T
steps), its step timed in the same mode, on the same thread pools and batch, in the same run,
the timed runs of the two alternating (`_timing.interleaved_medians`); a test checks that it
gives the same negative ELBO and gradients as `draw.DRAW` for the same weights. "x Keras" is its
step time over ours.

The matmul floor: only the two LSTMs' matmuls of a step (for each of the T steps the forward
`[B, K] x [K, 4 L]` product of each LSTM and the two products of its backward pass), as
`tf.function` in the policy's compute dtype: no step of that size can be faster on these cores
while it runs its LSTMs through TensorFlow's matmul.

  python benchmarks/draw_step.py                               # paper sizes, batch 100
  python benchmarks/draw_step.py --variant=cpu
  python benchmarks/draw_step.py --modes=function --precision=mixed_bfloat16  # no baseline
  python benchmarks/draw_step.py --modes=function --inter_op_threads=0 --intra_op_threads=0
  python benchmarks/draw_step.py --variant=smoke --batch_size=8 --steps=2 --repeats=1
"""

from __future__ import annotations

import _keras_draw  # benchmarks/, the script's folder
import _timing
import tensorflow as tf
import tf_keras
from absl import app, flags

from common import attention, precision, training
from draw import experiment as draw_experiment
from draw.configs import mnist as mnist_configs

MODES = ("eager", "function", "xla")

_MODES = flags.DEFINE_list("modes", list(MODES), f"Any of {MODES}.")
_VARIANT = flags.DEFINE_enum(
    "variant", "paper", list(mnist_configs.VARIANTS), "Config variant whose sizes are timed."
)
_UNROLL = flags.DEFINE_bool(
    "unroll",
    None,
    "Run the T steps as a Python loop (True) or a tf.scan (False); default the variant's "
    "model.unroll in eager and function modes and a tf.scan under XLA, which compiles an "
    "unrolled T = 64 step for over 10 minutes.",
)
_PRECISION = flags.DEFINE_enum(
    "precision",
    "float32",
    list(precision.POLICIES),
    "Mixed-precision policy of the LSTMs and linear heads (common/precision.py); the attention "
    "share is timed in float32 (the filterbanks stay float32 under every policy).",
)
_INTER = flags.DEFINE_integer(
    "inter_op_threads",
    None,
    "TensorFlow ops run at once (common.training.setup_threads; 0: TensorFlow's default); "
    "default the variant's config.inter_op_threads.",
    lower_bound=0,
)
_INTRA = flags.DEFINE_integer(
    "intra_op_threads",
    None,
    "Threads each op splits its work over (0: TensorFlow's default); default the variant's "
    "config.intra_op_threads.",
    lower_bound=0,
)
_BASELINE = flags.DEFINE_bool(
    "keras_baseline",
    True,
    "Also time the plain Keras DRAW (benchmarks/_keras_draw.py) in each mode, float32 only; not "
    "under XLA beyond T = 16 (its Python loop compiles for over 10 minutes at T = 64).",
)
_BATCH = flags.DEFINE_integer("batch_size", 100, "Batch size B.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed training steps per repeat.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps before timing.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats per cell; the median is reported.")


def _compile(fn, mode):
    return fn if mode == "eager" else tf.function(fn, jit_compile=(mode == "xla"))


def _train_step(model, loss_fn, mode):
    """One Adam step on `mean(loss_fn(x, seed))` over `model.trainable_variables` (built)."""
    optimizer = tf_keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)

    def step(x, seed):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(loss_fn(x, seed))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    return _compile(step, mode)


def _keras_train_step(config, mode):
    m = config.model
    model = _keras_draw.KerasDRAW(
        m.num_steps, m.lstm_size, m.latent_size, m.attention, m.read_size, m.write_size
    )
    noise = lambda batch, seed: tf.random.stateless_normal(
        [m.num_steps, batch, m.latent_size], seed
    )
    model(tf.zeros([1, 28, 28]), noise(1, [0, 0]))  # creates the variables
    return _train_step(model, lambda x, seed: model(x, noise(tf.shape(x)[0], seed)), mode)


def _attention_only(model, batch, mode):
    """T reads of `[x, x_hat]` and T writes, forward and backward, on random windows."""
    t, n_r, n_w = model.num_steps, model.read_size, model.write_size
    raw_r = tf.Variable(tf.random.stateless_normal([t, batch, 5], [1, 1], stddev=0.3))
    raw_w = tf.Variable(tf.random.stateless_normal([t, batch, 5], [1, 2], stddev=0.3))
    patch = tf.Variable(tf.random.stateless_normal([t, batch, n_w, n_w], [1, 3]))

    def step(x, seed):
        del seed
        with tf.GradientTape() as tape:
            total = 0.0
            for i in range(t):
                window = attention.filterbank_params(raw_r[i], n_r, model.image_shape)
                glimpse = attention.filterbank_read([x, x], window, n_r)
                window = attention.filterbank_params(raw_w[i], n_w, model.image_shape)
                canvas = attention.filterbank_write(patch[i], window, model.image_shape)
                total += tf.reduce_sum(glimpse) + tf.reduce_sum(canvas)
        grads = tape.gradient(total, [raw_r, raw_w, patch])
        return total + sum(tf.reduce_sum(g) for g in grads)

    return _compile(step, mode)


def _matmul_floor(config, batch: int, dtype: tf.DType):
    """(seconds, GFLOP) of the LSTM matmuls of one training step (module docstring)."""
    m = config.model
    read = 2 * (m.read_size**2 if m.attention else 28 * 28)
    inner = [read + 2 * m.lstm_size, m.latent_size + m.lstm_size]  # K: [input, hidden] per LSTM
    inputs = [tf.random.stateless_normal([batch, k], [2, k]) for k in inner]
    args = [tf.cast(a, dtype) for a in inputs] + [
        tf.cast(tf.random.stateless_normal([k, 4 * m.lstm_size], [3, k]), dtype) for k in inner
    ]
    grad = tf.cast(tf.random.stateless_normal([batch, 4 * m.lstm_size], [4, 0]), dtype)

    @tf.function
    def products(a_enc, a_dec, w_enc, w_dec, g):
        acc = tf.zeros([], dtype)
        for _ in range(m.num_steps):
            s = 1 + acc * 0  # a data dependence: no product is shared or hoisted out of the loop
            for a, w in ((a_enc, w_enc), (a_dec, w_dec)):
                out = tf.matmul(a * s, w)  # forward
                d_in = tf.matmul(g * s, w, transpose_b=True)  # backward: input, weights
                d_w = tf.matmul(a * s, g, transpose_a=True)
                acc += out[0, 0] + d_in[0, 0] + d_w[0, 0]
        return acc

    rate = _timing.median_steps_per_second(
        lambda i: products(*args, grad), _WARMUP.value, _STEPS.value, _REPEATS.value, "matmuls"
    )
    return 1 / rate, 3 * 2 * batch * 4 * m.lstm_size * sum(inner) * m.num_steps / 1e9


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if set(_MODES.value) - set(MODES):
        raise app.UsageError(f"--modes got {_MODES.value}; allowed: {MODES}.")
    if _BATCH.value < 1:
        raise app.UsageError("--batch_size must be >= 1.")
    _timing.check_flags(_STEPS.value, _REPEATS.value, _WARMUP.value)
    config = mnist_configs.get_config(_VARIANT.value)
    for field, flag in (("inter_op_threads", _INTER), ("intra_op_threads", _INTRA)):
        if flag.value is not None:
            config[field] = flag.value
    training.setup_threads(config.inter_op_threads, config.intra_op_threads)  # before any op
    if _UNROLL.value is not None:
        config.model.unroll = _UNROLL.value
    b = _BATCH.value
    x = tf.cast(tf.random.stateless_uniform([b, 28, 28], [0, 1]) < 0.15, tf.float32)
    _timing.print_machine()
    m = config.model
    print(
        f"DRAW `{_VARIANT.value}` sizes: T = {m.num_steps}, LSTM {m.lstm_size}, z {m.latent_size}, "
        f"attention {m.attention} (read {m.read_size}x{m.read_size}, write "
        f"{m.write_size}x{m.write_size}); B = {b}; "
        f"precision {_PRECISION.value}; threads inter-op {config.inter_op_threads or 'default'}, "
        f"intra-op {config.intra_op_threads or 'default'}; "
        "step = negative ELBO + grads + Adam; "
        f"steps/s = median of {_REPEATS.value} x {_STEPS.value} steps."
    )
    baseline = _BASELINE.value and _PRECISION.value == "float32"
    print(
        f"{'mode (loop)':<20} {'steps/s':>8} {'s/step':>8} {'attention share':>16} "
        f"{'Keras s/step':>13} {'x Keras':>8}"
    )
    unroll = m.unroll
    for mode in [md for md in MODES if md in _MODES.value]:
        xla = mode == "xla"
        m.unroll = unroll if _UNROLL.value is not None or not xla else False
        model = draw_experiment.build_model(config)
        step = _train_step(model, lambda x, seed, model=model: model(x, seed).loss, mode)
        cells = {"draw": lambda i, step=step: step(x, tf.constant([0, i]))}
        if baseline and not (xla and m.num_steps > 16):
            keras_step = _keras_train_step(config, mode)
            cells["keras"] = lambda i, step=keras_step: step(x, tf.constant([0, i]))
        with precision.policy(_PRECISION.value):  # traced (and run) under the policy
            rates = _timing.interleaved_medians(cells, _WARMUP.value, _STEPS.value, _REPEATS.value)
        rate = rates["draw"]
        share = "-"
        if m.attention:
            att = _attention_only(model, b, mode)
            att_rate = _timing.median_steps_per_second(
                lambda i, att=att: att(x, tf.constant([0, i])),
                _WARMUP.value, _STEPS.value, _REPEATS.value, f"attention {mode}",
            )  # fmt: skip
            share = f"{100 * rate / att_rate:.1f}%"
        label = f"{mode} ({'unrolled' if m.unroll else 'tf.scan'})"
        keras_time = speedup = "-"
        if "keras" in rates:
            keras_time, speedup = f"{1 / rates['keras']:.3f}", f"{rate / rates['keras']:.2f}"
        print(
            f"{label:<20} {rate:8.2f} {1 / rate:8.3f} {share:>16} {keras_time:>13} {speedup:>8}",
            flush=True,
        )
    dtype = precision.compute_dtype(_PRECISION.value)
    seconds, gflop = _matmul_floor(config, b, dtype)
    print(
        f"matmul floor ({dtype.name}, tf.function): the LSTMs' {gflop:.3g} GFLOP of matmuls per "
        f"step take {seconds:.3g} s alone ({gflop / seconds:.3g} GFLOP/s)"
    )


if __name__ == "__main__":
    app.run(main)
