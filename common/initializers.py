"""Sonnet initializers the packages share."""

from __future__ import annotations

import numpy as np
import sonnet as snt
import tensorflow as tf


class ArrayInitializer(snt.initializers.Initializer):
    """Initializes a variable to a fixed array (`snt.initializers.Constant` takes one scalar).

    Args:
      value: array-like of exactly the variable's shape, or a flat list of as many elements
        (reshaped to the variable's shape).

    Raises:
      ValueError: (at variable creation) the number of elements differs from the variable's.
    """

    def __init__(self, value):
        self._value = np.asarray(value)

    def __call__(self, shape, dtype):
        shape = tuple(int(s) for s in shape)
        if self._value.shape != shape and self._value.size != int(np.prod(shape)):
            raise ValueError(f"Initial value has shape {self._value.shape}, variable {shape}.")
        return tf.constant(self._value.reshape(shape), dtype=dtype)
