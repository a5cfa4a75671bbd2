"""`tf.distribute` strategy selection and device-count-independent randomness.

The training loop runs under the strategy named by `--config.strategy`; per
replica batch splitting and loss scaling follow the TF distribute guide
(`strategy.experimental_distribute_dataset` splits each global batch, and
per-example losses are averaged with `tf.nn.compute_average_loss` over the
*global* batch size, so summed replica gradients equal the one-device ones).
"""

from __future__ import annotations

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")

# A process joins one multi-worker cluster once: `make_strategy("multi_worker")` returns the same
# strategy to every caller (the run-folder agreement in `common.cli` and the training loop).
_MULTI_WORKER: list[tf.distribute.MultiWorkerMirroredStrategy] = []


def make_strategy(name: str, tpu_address: str = "") -> tf.distribute.Strategy:
    """Returns the `tf.distribute.Strategy` called `name` (`multi_worker`: one per process).

    Args:
      name: one of `STRATEGIES`. `default` runs on one device; `mirrored`
        replicates over every local GPU (or every logical CPU device when
        there is no GPU); `multi_worker` uses `MultiWorkerMirroredStrategy`
        configured by the `TF_CONFIG` environment variable; `tpu` connects to
        the TPU at `tpu_address` (empty: the local/Colab TPU).
      tpu_address: only for `tpu`.

    Raises:
      ValueError: for an unknown name.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        if not _MULTI_WORKER:
            _MULTI_WORKER.append(tf.distribute.MultiWorkerMirroredStrategy())
        return _MULTI_WORKER[0]
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}.")


def task_id(strategy: tf.distribute.Strategy) -> int:
    """This worker's index in its task type (0 outside a multi-worker cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(getattr(resolver, "task_id", 0) or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True unless this process is a non-chief worker of a multi-worker job (the chief is the
    `chief` task, or worker 0 when the cluster has no `chief`, as in the TF distribute guide)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    task_type = resolver.task_type
    if task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and resolver.task_id == 0 and not has_chief


def chief_value(strategy: tf.distribute.Strategy, value: int) -> int:
    """The chief's `value`, agreed by every worker of the cluster (one all-reduce): each of the
    chief's local replicas contributes `value / local replicas`, the other workers 0.

    Every worker must call it at the same point (it is a collective operation).
    """
    local = strategy.extended.worker_devices
    share = float(value) / len(local) if is_chief(strategy) else 0.0
    per_replica = strategy.run(lambda: tf.constant(share, tf.float64))
    return int(round(float(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))))


def global_batch_normal(
    local_shape: tuple[int, ...] | list[int],
    seed: tf.Tensor,
    batch_axis: int,
    dtype: tf.DType = tf.float32,
) -> tf.Tensor:
    """Standard-normal noise whose value for an example depends only on its
    position in the *global* batch, not on how many replicas share the batch.

    Every replica draws the noise of the whole global batch from the same
    stateless `seed` and keeps its own rows, so a run on two replicas sees
    exactly the noise that a one-device run sees. The cost is drawing
    `num_replicas` times more noise than needed, negligible next to the model.

    Args:
      local_shape: static shape of the noise for this replica's examples.
      seed: `[2]` int32/int64 stateless seed, identical on every replica.
      batch_axis: the axis of `local_shape` that indexes examples.
      dtype: floating dtype.

    Returns:
      A `local_shape` tensor of N(0, 1) draws.
    """
    ctx = tf.distribute.get_replica_context()
    replicas = ctx.num_replicas_in_sync if ctx is not None else 1
    if replicas == 1:
        return tf.random.stateless_normal(local_shape, seed, dtype=dtype)
    shape = list(local_shape)
    local_batch = shape[batch_axis]
    shape[batch_axis] = local_batch * replicas
    noise = tf.random.stateless_normal(shape, seed, dtype=dtype)
    start = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * local_batch
    return tf.gather(noise, tf.range(start, start + local_batch), axis=batch_axis)
