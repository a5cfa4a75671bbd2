"""The training loop every package shares.

A package describes its experiment as a `Task` (model, data, per-example
losses, evaluation, images); `train` does the rest: the `tf.distribute`
strategy, a `tf.function` step (optionally XLA-compiled), absl logs with
steps/s and ETA, TensorBoard scalars/images/learning rates, periodic
validation, checkpoints every N steps and on SIGINT/SIGTERM, resume, and a
guard that stops on NaN/Inf before anything non-finite is saved. An optional
`after_validation` hook sees every validation result and may stop the loop
(early stopping) without leaving the compiled step.

Config fields read here (see `loop_config`): `seed`, `strategy`,
`num_cpu_devices`, `deterministic`, `loop.num_steps`, `loop.log_every`,
`loop.summary_every`, `loop.image_every`, `loop.eval_every`,
`loop.checkpoint_every`, `loop.max_to_keep`, `loop.jit`, `loop.skip_nonfinite` (False: a
NaN/Inf stops training; True: that step's update is skipped, with a warning, and training goes
on; the TensorBoard scalar `skipped_steps` counts them since the process started).

Determinism and resume: the step seed comes from a checkpointed
`tf.random.Generator`, the data pipeline is indexed by the global step (the
checkpointed step *is* the pipeline's position), and op determinism is on, so
a resumed run continues the exact trajectory of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

import ml_collections
import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging

from common import distribute, experiment, precision, summaries


class NonFiniteError(FloatingPointError):
    """Raised when a training quantity becomes NaN or Inf."""


@dataclasses.dataclass
class ParamGroup:
    """Variables updated by one loss with one optimizer.

    Several groups may share an optimizer (e.g. PIWAE's inference and
    generative parameters, which get different objectives but one Adam).
    """

    variables: Sequence[tf.Variable]
    optimizer: tf_keras.optimizers.Optimizer


class StepOutput(NamedTuple):
    """What a task computes on one (per-replica) batch.

    Attributes:
      losses: parameter-group name -> per-example loss `[B]` to minimise.
      metrics: name -> per-example value `[B]`; reported as the mean over the
        global batch (e.g. `elbo`, `iwae_bound`, in nats).
    """

    losses: Mapping[str, tf.Tensor]
    metrics: Mapping[str, tf.Tensor]


class Task(Protocol):
    """The experiment-specific half of training; see `vae.experiment.VAETask`.

    Everything that must survive a restart lives under `model` (the loop
    checkpoints `model`, the optimizers, the step and the RNG): e.g. AIR keeps
    its baseline network and NVIL statistics there. The step number, when a
    task needs it (prior annealing), is its optimizer's `iterations`.
    """

    model: tf.Module
    global_batch_size: int

    def train_dataset(self, start_step: int) -> tf.data.Dataset:
        """Infinite global batches, starting with the batch of `start_step`."""

    def validation_dataset(self) -> tf.data.Dataset | None: ...

    def param_groups(self) -> Mapping[str, ParamGroup]: ...

    def step(self, batch, seed: tf.Tensor) -> StepOutput:
        """Per-example losses and metrics; `seed` is a `[2]` stateless seed."""

    def evaluate(self, dataset: tf.data.Dataset, seed: tf.Tensor) -> dict[str, float]: ...

    def images(self, batch, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """Named `[1, H, W, C]` images in [0, 1] for TensorBoard."""


class TrainResult(NamedTuple):
    step: int
    train_metrics: dict[str, float]
    validation_metrics: dict[str, float]
    interrupted: bool
    stopped_by_hook: bool = False  # `after_validation` returned True
    is_chief: bool = True  # False on the non-chief workers of a multi-worker job


def experiment_config(
    experiment: str, variant: str, variants: Sequence[str] | None = None
) -> ml_collections.ConfigDict:
    """The fields every package's config starts with.

    Args:
      experiment: the module with `build_model` / `build_task`, e.g. "vae.experiment".
      variant: the config variant's name.
      variants: the valid variant names, or None to leave checking to the caller.

    Returns:
      A ConfigDict with `experiment`, `variant`, `seed`, `strategy` (default | mirrored |
      multi_worker | tpu), `num_cpu_devices` (>1 splits the CPU into logical devices, for
      testing `mirrored`), `deterministic` (`tf.config.experimental.enable_op_determinism()`),
      `precision` (float32 | mixed_bfloat16 | mixed_float16, `common.precision`), and
      `inter_op_threads` / `intra_op_threads` (TensorFlow's thread pools, `setup_threads`; 0
      leaves TensorFlow's default).

    Raises:
      ValueError: `variant` not in `variants`.
    """
    if variants is not None and variant not in variants:
        raise ValueError(f"Unknown variant {variant!r}; expected one of {', '.join(variants)}.")
    return ml_collections.ConfigDict(
        dict(
            experiment=experiment,
            variant=variant,
            seed=0,
            strategy="default",
            num_cpu_devices=0,
            deterministic=True,
            precision="float32",
            inter_op_threads=0,
            intra_op_threads=0,
        )
    )


# Valid values of the fields every config has (`experiment_config`, `loop_config`, and the
# batch / optimizer / evaluation fields all packages use); packages add theirs in their
# experiment module's `CONFIG_RANGES`. Forms: ">= a", "> a", "in [a, b]", "in [a, b)".
COMMON_RANGES = {
    "seed": ">= 0",
    "num_cpu_devices": ">= 0",
    "inter_op_threads": ">= 0",
    "intra_op_threads": ">= 0",
    "batch_size": ">= 1",
    "optimizer.learning_rate": "> 0",
    "eval.batch_size": ">= 1",
    "loop.num_steps": ">= 0",
    "loop.log_every": ">= 1",
    "loop.summary_every": ">= 1",
    "loop.image_every": ">= 1",
    "loop.eval_every": ">= 1",
    "loop.checkpoint_every": ">= 1",
    "loop.max_to_keep": ">= 1",
}


def parse_range(spec: str) -> tuple[float | None, bool, float | None, bool]:
    """`(low, low_inclusive, high, high_inclusive)` of a `COMMON_RANGES`-style spec.

    Raises:
      ValueError: a spec in none of the forms.
    """
    spec = spec.strip()
    for op, inclusive in ((">=", True), (">", False)):
        if spec.startswith(op):
            return float(spec[len(op) :]), inclusive, None, False
    if spec.startswith("in ") and spec[3] in "[(" and spec[-1] in "])":
        low, high = (float(v) for v in spec[4:-1].split(","))
        return low, spec[3] == "[", high, spec[-1] == "]"
    raise ValueError(f"Bad range spec {spec!r}.")


def check_ranges(config: ml_collections.ConfigDict, ranges: Mapping[str, str]) -> None:
    """Checks every field named in `ranges` (dotted paths; absent fields are skipped; for a
    list or tuple, each element).

    Raises:
      ValueError: naming the first field outside its range, its value and the range.
    """
    for path, spec in ranges.items():
        value = config
        for part in path.split("."):
            if not isinstance(value, ml_collections.ConfigDict) or part not in value:
                value = None
                break
            value = value[part]
        if value is None:
            continue
        low, low_inclusive, high, high_inclusive = parse_range(spec)
        for v in value if isinstance(value, list | tuple) else [value]:
            bad = (low is not None and (v < low if low_inclusive else v <= low)) or (
                high is not None and (v > high if high_inclusive else v >= high)
            )
            if bad:
                raise ValueError(f"config.{path} = {value!r} is out of range: expected {spec}.")


def loop_config() -> ml_collections.ConfigDict:
    """Default loop settings; packages embed this in their configs."""
    return ml_collections.ConfigDict(
        dict(
            num_steps=1000,
            log_every=100,
            summary_every=100,
            image_every=1000,
            eval_every=1000,
            checkpoint_every=1000,
            max_to_keep=5,
            jit=False,
            skip_nonfinite=False,
        )
    )


def setup_devices(num_cpu_devices: int) -> None:
    """Splits the CPU into `num_cpu_devices` logical devices (for testing
    `mirrored` without GPUs). Must run before TF initialises its runtime."""
    if num_cpu_devices <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_cpu_devices
        )
    except RuntimeError as e:
        raise RuntimeError(
            "config.num_cpu_devices must be set before TensorFlow runs any op; "
            "run it in a fresh process."
        ) from e


def setup_threads(inter_op: int, intra_op: int) -> None:
    """Sizes TensorFlow's thread pools: `inter_op` ops run at once, each op splits its work
    over `intra_op` threads (0 leaves TensorFlow's default, one thread per core for each).

    A long chain of small ops (an RNN's steps) can run faster with `inter_op` = cores and
    `intra_op` = 1: independent ops of a step (e.g. a matmul's two backward products) run side
    by side instead of each splitting a small matmul over every core
    (`benchmarks/draw_step.py --inter_op_threads --intra_op_threads` measures it).

    Raises:
      RuntimeError: TensorFlow has already run an op in this process.
    """
    try:
        if inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        if intra_op:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    except RuntimeError as e:
        raise RuntimeError(
            "config.inter_op_threads / intra_op_threads must be set before TensorFlow runs any "
            "op; run it in a fresh process."
        ) from e
    if inter_op or intra_op:
        logging.info(
            "TensorFlow thread pools: %s inter-op, %s intra-op.",
            inter_op or "default", intra_op or "default",
        )  # fmt: skip


def _inner(optimizer: tf_keras.optimizers.Optimizer) -> tf_keras.optimizers.Optimizer:
    """The optimizer a `LossScaleOptimizer` wraps (itself otherwise)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def current_learning_rate(optimizer: tf_keras.optimizers.Optimizer) -> float:
    optimizer = _inner(optimizer)
    lr = optimizer._learning_rate  # the schedule or variable given at construction
    if isinstance(lr, tf_keras.optimizers.schedules.LearningRateSchedule):
        return float(lr(optimizer.iterations))
    return float(tf.convert_to_tensor(lr))


def _constant_learning_rate(optimizer: tf_keras.optimizers.Optimizer) -> float | None:
    """The learning rate of an optimizer built with a constant one; None for a schedule."""
    lr = _inner(optimizer)._learning_rate
    return float(lr.numpy()) if isinstance(lr, tf.Variable) else None


def _lost_worker_message(error: Exception, step: int, manager) -> str:
    """One line for a multi-worker step that failed because a worker stopped."""
    tasks = sorted(
        {int(t) for t in re.findall(r"/job:\w+/(?:replica:\d+/)?task:(\d+)", str(error))}
    )
    # TensorFlow names the lost task only on some paths.
    who = f"worker {', '.join(map(str, tasks))}" if tasks else "a worker"
    return (
        f"Training stopped at step {step}: {who} of the cluster stopped (TensorFlow: "
        f"{type(error).__name__}). The last checkpoint ({manager.latest_checkpoint or 'none yet'})"
        " is intact: restart every worker with --resume to continue from it (TF distribute "
        "guide: a multi-worker job restarts all its workers)."
    )


class _SignalCatcher:
    """Turns SIGINT/SIGTERM into a flag the loop polls, so the loop can save a
    checkpoint and return instead of dying mid-write."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.received is not None:  # a second signal: give up at once
            raise KeyboardInterrupt
        self.received = signum
        logging.warning("Received signal %d: saving a checkpoint and stopping.", signum)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _make_train_step(
    task, strategy, groups, rng, step, jit, skip_nonfinite=False, loss_scaling=False
):
    names_by_optimizer: dict[int, list[str]] = {}
    for name, group in groups.items():
        names_by_optimizer.setdefault(id(group.optimizer), []).append(name)
    global_batch = task.global_batch_size

    def compute(batch, seed):
        with tf.GradientTape(persistent=len(groups) > 1) as tape:
            out = task.step(batch, seed)
            losses = {
                name: tf.nn.compute_average_loss(out.losses[name], global_batch_size=global_batch)
                for name in groups
            }
            if loss_scaling:  # mixed_float16: each group's loss times its optimizer's scale
                losses = {n: groups[n].optimizer.get_scaled_loss(v) for n, v in losses.items()}
        grads = {name: tape.gradient(losses[name], groups[name].variables) for name in groups}
        if loss_scaling:
            grads = {n: groups[n].optimizer.get_unscaled_gradients(g) for n, g in grads.items()}
        for name, group_grads in grads.items():
            for g, v in zip(group_grads, groups[name].variables, strict=False):
                if g is None:
                    raise ValueError(f"Variable {v.name} of group {name!r} gets no gradient.")
        sums = {k: tf.reduce_sum(v) for k, v in out.metrics.items()}
        sums.update({f"loss/{name}": tf.reduce_sum(out.losses[name]) for name in groups})
        return sums, grads

    single = strategy.num_replicas_in_sync == 1
    if jit and not single:
        # The cross-replica all-reduce stays outside the XLA cluster.
        compute = tf.function(compute, jit_compile=True)

    def apply(grads):
        for names in names_by_optimizer.values():
            optimizer = groups[names[0]].optimizer
            pairs = [
                (g, v) for n in names for g, v in zip(grads[n], groups[n].variables, strict=False)
            ]
            optimizer.apply_gradients(pairs, skip_gradients_aggregation=True)

    def replica_step(batch, seed):
        sums, grads = compute(batch, seed)
        ctx = tf.distribute.get_replica_context()
        if ctx.num_replicas_in_sync > 1:
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        flat = tf.nest.flatten(grads)
        grad_norm = tf.linalg.global_norm(flat)
        if loss_scaling and not skip_nonfinite:
            # The LossScaleOptimizer skips an update with non-finite gradients itself and
            # halves its scale; the loop tells an overflow from a non-finite loss.
            apply(grads)
            return sums, grad_norm, 1.0 - tf.cast(tf.math.is_finite(grad_norm), tf.float32)
        if not skip_nonfinite:
            apply(grads)
            return sums, grad_norm, tf.constant(0.0)
        finite_sums = list(sums.values())
        if ctx.num_replicas_in_sync > 1:
            finite_sums = ctx.all_reduce(tf.distribute.ReduceOp.SUM, finite_sums)
        # The update happens only when the loss, every metric and every gradient are finite
        # (the same decision on every replica: it reads all-reduced values).
        finite_values = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in finite_sums])
        finite = tf.math.is_finite(grad_norm) & finite_values
        # With loss scaling the LossScaleOptimizer must see non-finite gradients: it skips that
        # update itself and halves its scale (kept from it, the scale would never come down).
        update = finite_values if loss_scaling else finite
        tf.cond(update, lambda: apply(grads) or tf.constant(True), lambda: tf.constant(False))
        return sums, grad_norm, 1.0 - tf.cast(finite, tf.float32)

    if jit and single:
        # One device: compile gradients and optimizer update into one cluster.
        replica_step = tf.function(replica_step, jit_compile=True)

    @tf.function
    def train_step(iterator):
        batch = next(iterator)
        seed = rng.make_seeds(1)[:, 0]
        sums, grad_norm, skipped = strategy.run(replica_step, args=(batch, seed))
        sums = {
            k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) / global_batch
            for k, v in sums.items()
        }
        sums["grad_norm"] = strategy.reduce(tf.distribute.ReduceOp.MEAN, grad_norm, axis=None)
        if skip_nonfinite or loss_scaling:
            # The same on every replica: their mean is that value.
            sums["skipped_nonfinite"] = strategy.reduce(tf.distribute.ReduceOp.MEAN, skipped, None)
        step.assign_add(1)
        return sums

    return train_step


def train(
    config: ml_collections.ConfigDict,
    run_dir: str,
    build_task,
    resume_from: str | None = None,
    after_validation: Callable[[int, dict[str, float]], bool] | None = None,
) -> TrainResult:
    """Trains `build_task(config)` and checkpoints into `run_dir`.

    Args:
      config: the experiment config (see module docstring for the fields).
      run_dir: the run folder (see `common.experiment`).
      build_task: `config -> Task`; called under the strategy's scope. The task
        must have created all its variables when it returns.
      resume_from: checkpoint prefix to continue from, or None for a new run.
      after_validation: optional `(step, validation_metrics) -> stop`, called
        after every validation (every `loop.eval_every` steps and at the end).
        With a hook, a checkpoint is saved at every validation step before
        the validation runs, so the hook's own records (e.g. an early-stopping
        state) always have a checkpoint to resume from. Returning True ends
        training there; the step function stays compiled across validations.

    Returns:
      A `TrainResult`; `interrupted` is True when a signal stopped training,
      `stopped_by_hook` when `after_validation` did.

    Raises:
      NonFiniteError: a loss, metric or gradient became NaN/Inf; the message
        names the step and the quantity; no checkpoint is written after it.
      experiment.RunError: the checkpoint to resume from is unreadable, or a checkpoint could not
        be written (disk full, read-only folder); the earlier checkpoints are left intact.
    """
    with precision.policy(config.get("precision", "float32")):
        return _train(config, run_dir, build_task, resume_from, after_validation)


def _train(config, run_dir, build_task, resume_from, after_validation) -> TrainResult:
    setup_devices(config.get("num_cpu_devices", 0))
    setup_threads(config.get("inter_op_threads", 0), config.get("intra_op_threads", 0))
    if config.get("deterministic", True):
        tf.config.experimental.enable_op_determinism()
    tf.random.set_seed(config.seed)  # initializers; the steps use stateless seeds
    strategy = distribute.make_strategy(config.strategy)
    # Built in float32 (the variables' initial values too); the policy applies to the steps.
    with strategy.scope(), precision.policy("float32"):
        task = build_task(config)
        groups = dict(task.param_groups())
        optimizers = list({id(g.optimizer): g.optimizer for g in groups.values()}.values())
        for optimizer in optimizers:
            optimizer.build(
                [v for g in groups.values() if g.optimizer is optimizer for v in g.variables]
            )
        loss_scaling = precision.uses_loss_scaling(config.get("precision", "float32"))
        if loss_scaling:  # dynamic loss scaling for float16 (common/precision.py)
            scaled = {id(o): tf_keras.mixed_precision.LossScaleOptimizer(o) for o in optimizers}
            groups = {
                n: dataclasses.replace(g, optimizer=scaled[id(g.optimizer)])
                for n, g in groups.items()
            }
            optimizers = list(scaled.values())
    # Outside the scope: one step counter and one random stream, used in
    # cross-replica context only.
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    rng = tf.random.Generator.from_seed(config.seed)
    checkpoint = tf.train.Checkpoint(model=task.model, optimizers=optimizers, step=step, rng=rng)
    chief = distribute.is_chief(strategy)
    # Multi-worker: every worker must take part in saving, but only the chief
    # writes into the run folder (TF distribute guide); the others write to a
    # scratch folder that is removed at the end.
    scratch = f".worker_{distribute.task_id(strategy)}"
    checkpoint_dir = run_dir if chief else os.path.join(run_dir, scratch)
    manager = tf.train.CheckpointManager(
        checkpoint,
        checkpoint_dir,
        max_to_keep=config.loop.max_to_keep,
        checkpoint_name=experiment.CHECKPOINT_NAME,
    )
    if resume_from:
        # A constant learning rate is an optimizer variable and would come back from the
        # checkpoint; the config's (e.g. a --config override on --resume) wins.
        configured = [_constant_learning_rate(o) for o in optimizers]
        experiment.restore(checkpoint, resume_from, run_dir)
        logging.info("Resumed from %s at step %d.", resume_from, int(step))
        for optimizer, lr in zip(map(_inner, optimizers), configured, strict=True):
            if lr is not None and float(optimizer._learning_rate.numpy()) != lr:
                logging.info(
                    "Learning rate %g from the config (the checkpoint had %g).",
                    lr,
                    float(optimizer._learning_rate.numpy()),
                )
                optimizer._learning_rate.assign(lr)
    start = int(step)
    num_steps = config.loop.num_steps
    if chief:  # events a killed process wrote after the checkpoint are rewritten now
        for name in ("train", "validation"):
            # A run that has all its steps validates once more at the end (after its last
            # checkpoint): that validation is rewritten too.
            keep = start - 1 if name == "validation" and start >= num_steps else start
            dropped = summaries.drop_events_after(os.path.join(run_dir, name), keep)
            if dropped:
                logging.info(
                    "Dropped %d TensorBoard events after step %d from %s/%s: this run rewrites "
                    "them.",
                    dropped,
                    keep,
                    run_dir,
                    name,
                )
    dataset = strategy.experimental_distribute_dataset(task.train_dataset(start))
    iterator = iter(dataset)
    skip_nonfinite = bool(config.loop.get("skip_nonfinite", False))
    train_step = _make_train_step(
        task, strategy, groups, rng, step, config.loop.jit, skip_nonfinite, loss_scaling
    )
    skipped_steps = 0
    validation = task.validation_dataset()
    image_batch = next(iter(validation if validation is not None else task.train_dataset(0)))

    writers = {
        name: (
            tf.summary.create_file_writer(os.path.join(run_dir, name))
            if chief
            else tf.summary.create_noop_writer()
        )
        for name in ("train", "validation")
    }
    sums: dict[str, float] = {}
    count = 0
    last_metrics: dict[str, float] = {}
    validation_metrics: dict[str, float] = {}
    interrupted = False
    t_log, s_log = time.perf_counter(), start
    t_summary, s_summary = t_log, start
    loop = config.loop

    def evaluate(s):
        nonlocal validation_metrics
        if validation is None:
            return
        validation_metrics = task.evaluate(validation, tf.constant([config.seed, s], tf.int32))
        with writers["validation"].as_default():
            for k, v in validation_metrics.items():
                tf.summary.scalar(k, v, step=s)
        logging.info(
            "step %d validation: %s",
            s,
            ", ".join(f"{k} {v:.4f}" for k, v in validation_metrics.items()),
        )

    def save(s):
        if manager.latest_checkpoint and experiment.checkpoint_step(manager.latest_checkpoint) == s:
            return
        try:
            path = manager.save(checkpoint_number=s)
        except (tf.errors.OpError, OSError) as e:  # disk full, read-only, folder gone
            # TF writes into `<prefix>_temp` and renames it only when complete: drop the partial
            # copy; every earlier checkpoint stays as it was.
            for partial in glob.glob(os.path.join(checkpoint_dir, f"*-{s}_temp*")):
                shutil.rmtree(partial, ignore_errors=True)
            error = experiment.write_failure(f"the step-{s} checkpoint", checkpoint_dir, e)
            raise experiment.RunError(
                f"{error} The last good checkpoint ({manager.latest_checkpoint or 'none yet'}) "
                "is intact; free space or make the folder writable, then --resume."
            ) from e
        logging.info("Saved checkpoint %s", path)

    stopped_by_hook = False
    if validation is None:
        after_validation = None  # no validation data: the hook is never called
    if start >= num_steps:
        logging.info("Step %d already reaches loop.num_steps = %d.", start, num_steps)
    with _SignalCatcher() as signals:
        for s in range(start + 1, num_steps + 1):
            try:
                values = {k: float(v) for k, v in train_step(iterator).items()}
            except (tf.errors.UnavailableError, tf.errors.AbortedError) as e:
                if config.strategy != "multi_worker":
                    raise
                raise experiment.RunError(_lost_worker_message(e, s, manager)) from e
            bad = [k for k, v in values.items() if not np.isfinite(v)]
            skipped = values.pop("skipped_nonfinite", 0.0) > 0.5
            overflow = loss_scaling and skipped and bad == ["grad_norm"]
            if overflow:
                skipped_steps += 1
                logging.info(
                    "Step %d: the float16 gradients overflowed; the update was skipped and the "
                    "loss scale halved (mixed_float16).",
                    s,
                )
            elif skipped and skip_nonfinite:
                skipped_steps += 1
                logging.warning(
                    "Step %d skipped (loop.skip_nonfinite): non-finite %s; the parameters and "
                    "optimizer state were left as they were. %d step(s) skipped so far.",
                    s,
                    ", ".join(bad),
                    skipped_steps,
                )
            elif bad:
                raise NonFiniteError(
                    f"Non-finite {', '.join(bad)} at step {s} "
                    f"({', '.join(f'{k}={values[k]}' for k in bad)}). Training stopped; the "
                    f"last good checkpoint ({manager.latest_checkpoint or 'none yet'}) is "
                    "intact and nothing was saved after it. Lower the learning rate or "
                    "check the data, then --resume (or set --config.loop.skip_nonfinite=True "
                    "to skip such steps)."
                )
            else:  # the averages in TensorBoard cover the steps that were applied
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
            if s % loop.log_every == 0 or s == num_steps:
                now = time.perf_counter()
                rate = (s - s_log) / max(now - t_log, 1e-9)
                eta = (num_steps - s) / max(rate, 1e-9)
                logging.info(
                    "step %d/%d  %s  %.1f steps/s  ETA %s",
                    s,
                    num_steps,
                    "  ".join(f"{k} {v:.4f}" for k, v in values.items()),
                    rate,
                    time.strftime("%H:%M:%S", time.gmtime(eta)),
                )
                t_log, s_log = now, s
            if s % loop.summary_every == 0 or s == num_steps:
                now = time.perf_counter()
                last_metrics = {k: v / count for k, v in sums.items()}
                with writers["train"].as_default():
                    for k, v in last_metrics.items():
                        tf.summary.scalar(k, v, step=s)
                    for i, optimizer in enumerate(optimizers):
                        suffix = f"_{i}" if len(optimizers) > 1 else ""
                        tf.summary.scalar(
                            "learning_rate" + suffix, current_learning_rate(optimizer), step=s
                        )
                    tf.summary.scalar(
                        "steps_per_second", (s - s_summary) / max(now - t_summary, 1e-9), step=s
                    )
                    if skip_nonfinite or loss_scaling:
                        tf.summary.scalar("skipped_steps", skipped_steps, step=s)
                    if loss_scaling:
                        for i, optimizer in enumerate(optimizers):
                            suffix = f"_{i}" if len(optimizers) > 1 else ""
                            tf.summary.scalar("loss_scale" + suffix, optimizer.loss_scale, step=s)
                sums, count = {}, 0
                t_summary, s_summary = now, s
            if s % loop.image_every == 0 or s == num_steps:
                with writers["train"].as_default():
                    for name, image in task.images(
                        image_batch, tf.constant([config.seed, s], tf.int32)
                    ).items():
                        tf.summary.image(name, image, step=s)
            if s % loop.eval_every == 0 and s != num_steps:
                if after_validation is not None:
                    save(s)
                evaluate(s)
                if after_validation is not None and after_validation(s, validation_metrics):
                    stopped_by_hook = True
                    break
            if s % loop.checkpoint_every == 0:
                save(s)
            if signals.received is not None:
                interrupted = True
                save(s)
                logging.warning("Stopped at step %d by signal; continue with --resume.", s)
                break
        else:
            final = int(step)
            save(final)
            evaluate(final)
            if after_validation is not None:
                stopped_by_hook = bool(after_validation(final, validation_metrics))
    for writer in writers.values():
        writer.flush()
    if not chief:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return TrainResult(
        int(step), last_metrics, validation_metrics, interrupted, stopped_by_hook, chief
    )
