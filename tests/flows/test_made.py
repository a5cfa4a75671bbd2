"""Tests for common/made.py (MADE, re-exported as flows.MADE)."""

import numpy as np
import sonnet as snt
import tensorflow as tf
import tensorflow_probability as tfp
from absl.testing import parameterized

import flows
from common import made as made_lib

tfb = tfp.bijectors

ORDERS = ("left-to-right", "right-to-left", "random")


def _made_numpy(made, x, context=None):
    """Reference forward pass: dense layers with W * mask, in NumPy."""
    h = x
    num_layers = len(made.weights)
    if context is not None:  # Context weights of all layers side by side.
        splits = np.cumsum([w.shape[1] for w in made.weights])[:-1]
        context_terms = np.split(context @ made.conditional_weights.numpy(), splits, axis=-1)
    for i in range(num_layers):
        out = h @ (made.weights[i].numpy() * made.masks[i]) + made.biases[i].numpy()
        if context is not None:
            out = out + context_terms[i]
        h = np.tanh(out) if i < num_layers - 1 else out
    return np.split(h, made.num_params, axis=-1)


class MADETest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        tf.random.set_seed(0)
        self.rng = np.random.default_rng(0)

    @parameterized.product(order=ORDERS, degrees=["sequential", "random"])
    def test_degrees_and_masks_follow_germain(self, order, degrees):
        d, hidden = 6, [11, 7]
        made = flows.MADE(d, hidden, input_order=order, hidden_degrees=degrees, seed=3)
        self.assertCountEqual(made.input_degrees, range(1, d + 1))
        previous = made.input_degrees
        for layer, mask in zip(made.hidden_degrees, made.masks[:-1], strict=True):
            self.assertGreaterEqual(layer.min(), min(previous.min(), d - 1))
            self.assertLessEqual(layer.max(), d - 1)
            self.assertAllEqual(mask, previous[:, None] <= layer[None, :])
            previous = layer
        # Strict output rule, tiled over the two parameters.
        strict = previous[:, None] < made.input_degrees[None, :]
        self.assertAllEqual(made.masks[-1], np.tile(strict, [1, 2]))
        # Connectivity from input j to output d: only earlier inputs.
        path = made.masks[0]
        for mask in made.masks[1:]:
            path = (path @ mask > 0).astype(np.float32)
        allowed = made.input_degrees[:, None] < made.input_degrees[None, :]
        self.assertAllEqual(path[:, :d] > 0, allowed & (path[:, :d] > 0))
        if degrees == "sequential":  # Cycling degrees connect every allowed pair.
            self.assertAllEqual(path[:, :d] > 0, allowed)

    def test_explicit_order_and_validation(self):
        made = flows.MADE(3, [4], input_order=[2, 3, 1])
        self.assertAllEqual(made.input_degrees, [2, 3, 1])
        with self.assertRaises(ValueError):
            flows.MADE(3, [4], input_order=[1, 1, 2])
        with self.assertRaises(ValueError):
            flows.MADE(3, [4], input_order="diagonal")
        with self.assertRaises(ValueError):
            flows.MADE(3, [4], hidden_degrees="equal")
        with self.assertRaises(ValueError):
            flows.MADE(0, [4])
        with self.assertRaises(ValueError):
            flows.MADE(3, [0])
        with self.assertRaises(ValueError):
            flows.MADE(3, [4])(tf.zeros([1, 3]), conditional_input=tf.zeros([1, 2]))
        with self.assertRaises(ValueError):
            flows.MADE(3, [4], conditional_size=2)(tf.zeros([1, 3]))

    @parameterized.product(order=ORDERS, conditional=[False, True])
    def test_matches_numpy_reference(self, order, conditional):
        d, c = 5, 3
        made = flows.MADE(
            d,
            [16, 16],
            input_order=order,
            activation=tf.tanh,
            conditional_size=c if conditional else None,
            dtype=tf.float64,
            seed=1,
        )
        x = self.rng.normal(size=(7, d))
        context = self.rng.normal(size=(7, c)) if conditional else None
        outputs = made(tf.constant(x), None if context is None else tf.constant(context))
        self.assertLen(outputs, 2)
        for output, expected in zip(outputs, _made_numpy(made, x, context), strict=True):
            self.assertAllClose(output, expected)

    @parameterized.parameters(
        *[(order, "sequential", d) for order in ORDERS for d in (2, 5, 8)],
        *[(order, "random", 8) for order in ORDERS],
    )
    def test_jacobian_is_triangular_in_the_order(self, order, degrees, d):
        """Autodiff Jacobian of every output parameter: d_out[i] / d_x[j] = 0
        unless j precedes i in the order, and nonzero where a path exists."""
        made = flows.MADE(
            d,
            [3 * d, 3 * d],
            input_order=order,
            hidden_degrees=degrees,
            activation=tf.tanh,
            dtype=tf.float64,
            seed=2,
        )
        x = tf.constant(self.rng.normal(size=(4, d)))
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            outputs = made(x)
        allowed = made.input_degrees[None, :] < made.input_degrees[:, None]  # [out, in]
        for output in outputs:
            jacobian = np.abs(tape.batch_jacobian(output, x).numpy()).max(0)  # [D, D]
            self.assertAllEqual(jacobian[~allowed], np.zeros((~allowed).sum()))
            if degrees == "sequential":
                self.assertTrue(np.all(jacobian[allowed] > 0))
        first = int(np.argmin(made.input_degrees))
        self.assertAllClose(outputs[0][:, first], np.zeros(4))  # Bias only (zero init).

    def test_perturbation_leaves_earlier_outputs_unchanged(self):
        d = 6
        made = flows.MADE(d, [32], input_order="random", seed=4)
        x = self.rng.normal(size=(3, d)).astype(np.float32)
        base = np.stack(made(tf.constant(x)))
        for j in range(d):
            x_new = x.copy()
            x_new[:, j] += 1.0
            changed = np.abs(np.stack(made(tf.constant(x_new))) - base).max((0, 1)) > 0
            not_after = made.input_degrees <= made.input_degrees[j]
            self.assertFalse(np.any(changed[not_after]))

    def test_context_reaches_every_output(self):
        d, c = 4, 2
        made = flows.MADE(d, [12], conditional_size=c, activation=tf.tanh, dtype=tf.float64)
        x = tf.constant(self.rng.normal(size=(3, d)))
        context = tf.constant(self.rng.normal(size=(3, c)))
        with tf.GradientTape() as tape:
            tape.watch(context)
            shift, _ = made(x, context)
        jacobian = tape.batch_jacobian(shift, context).numpy()
        self.assertTrue(np.all(np.abs(jacobian).max(0).max(-1) > 0))

    def test_broadcasts_context_and_batch_shapes(self):
        made = flows.MADE(3, [8], conditional_size=2, seed=0)
        x = tf.random.normal([4, 5, 3])
        context = tf.random.normal([5, 2])
        shift, log_scale = made(x, context)
        self.assertEqual(shift.shape, [4, 5, 3])
        flat_shift, _ = made(tf.reshape(x, [20, 3]), tf.tile(context, [4, 1]))
        self.assertAllClose(tf.reshape(shift, [20, 3]), flat_shift)
        single, _ = made(x[0, 0], context[0])
        self.assertAllClose(single, shift[0, 0])
        self.assertEqual(log_scale.shape, [4, 5, 3])

    def test_variable_count_and_tf_function(self):
        made = flows.MADE(5, [8, 8], num_params=3, conditional_size=2)
        # 3 weights + 3 biases + 1 context weight, created at construction.
        self.assertLen(made.trainable_variables, 7)
        self.assertEqual(made.weights[-1].shape, [8, 15])
        self.assertEqual(made.conditional_weights.shape, [2, 8 + 8 + 15])
        x, context = tf.random.normal([4, 5]), tf.random.normal([4, 2])
        eager = made(x, context)
        graph = tf.function(made)(x, context)
        self.assertLen(graph, 3)
        for a, b in zip(eager, graph, strict=True):
            self.assertAllClose(a, b)

    def test_premasked_training_keeps_masks_and_matches_unmasked(self):
        """Pre-masked weights get masked gradients: after Adam steps the
        masked entries are still exactly zero, and training matches the
        `W * mask` variant step for step."""
        kwargs = dict(input_order="random", hidden_degrees="random", seed=5)
        fast = flows.MADE(4, [10, 10], premasked=True, **kwargs)
        slow = flows.MADE(4, [10, 10], premasked=False, **kwargs)
        x = tf.random.normal([32, 4])
        for made in (fast, slow):
            optimizer = snt.optimizers.Adam(1e-2)
            for _ in range(3):
                with tf.GradientTape() as tape:
                    shift, log_scale = made(x)
                    loss = tf.reduce_mean(tf.square(x - shift) * tf.exp(-log_scale) + log_scale)
                grads = tape.gradient(loss, made.trainable_variables)
                optimizer.apply(grads, made.trainable_variables)
        for w, mask in zip(fast.weights, fast.masks, strict=True):
            self.assertAllEqual(w.numpy()[mask == 0], np.zeros(int((mask == 0).sum())))
        for a, b in zip(fast(x), slow(x), strict=True):
            self.assertAllClose(a, b, atol=1e-6)

    def test_is_a_maf_conditioner(self):
        d = 4
        made = flows.MADE(d, [16], input_order="right-to-left", dtype=tf.float64, seed=0)
        maf = tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=made)
        self.assertLen(maf.trainable_variables, 4)
        x = self.rng.normal(size=(5, d))
        y = maf.forward(tf.constant(x)).numpy()  # D sequential passes.
        self.assertAllClose(maf.inverse(tf.constant(y)), x)  # One pass.

    def test_degree_helpers_for_one_dimension(self):
        degrees = made_lib.make_hidden_degrees(
            1, [3], np.array([1]), "random", np.random.default_rng(0)
        )
        self.assertAllEqual(degrees[0], [0, 0, 0])
        made = flows.MADE(1, [3], seed=0)
        shift, _ = made(tf.random.normal([2, 1]))
        self.assertAllClose(shift, tf.zeros([2, 1]))  # Bias only.


if __name__ == "__main__":
    tf.test.main()
