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


def make_strategy(name: str, tpu_address: str = "") -> tf.distribute.Strategy:
    """Returns the `tf.distribute.Strategy` called `name`.

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
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}.")


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
