"""Reading a run's TensorBoard event files in tests (TensorBoard's own `EventAccumulator`)."""

import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator


def load(path: str) -> event_accumulator.EventAccumulator:
    """All events of the event files in folder `path` (e.g. `<run>/train`)."""
    acc = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def scalars(acc: event_accumulator.EventAccumulator, tag: str) -> list[tuple[int, float]]:
    """`[(step, value)]` of scalar `tag`, in the order written."""
    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
