"""Tests for RealNVP's masks (`flows.make_flow("realnvp", mask=...)`): the MAF
code's odd/even 'parity' couplings (Papamakarios et al. 2017) and the image
masks, checkerboard and channel (Dinh et al. 2017, sec. 3.4)."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from absl.testing import parameterized

import flows
from flows import density as flows_density
from flows.configs import mnist as mnist_configs
from tests.flows import flow_test_util

tfb = tfp.bijectors

HIDDEN = (8,)


def _expected_fixed(mask, image_shape, k):
    """`[H * W * C]` bool: units coupling k must leave unchanged, by explicit loops
    over a row-major `[H, W, C]` image; for 'parity', the MAF code's mask
    (`arange(D) % 2` marks the unchanged units, flipped after every coupling)."""
    if mask == "parity":
        maf_code_mask = np.arange(int(np.prod(image_shape))) % 2
        for _ in range(k):
            maf_code_mask = 1 - maf_code_mask
        return maf_code_mask == 1
    height, width, channels = image_shape
    fixed = []
    for h in range(height):
        for w in range(width):
            for c in range(channels):
                if mask == "checkerboard":
                    fixed.append((h + w) % 2 == k % 2)  # parity alternates with k
                else:
                    first_half = c < channels // 2
                    fixed.append(first_half if k % 2 == 0 else not first_half)
    return np.array(fixed)


def _couplings(flow):
    return [b for b in flow.parameters["bijectors"] if not isinstance(b, tfb.BatchNormalization)]


def _shape_kwargs(mask, image_shape):
    """`make_flow` takes `image_shape` for the image masks only; a 'parity'
    case's shape just gives D."""
    return {"image_shape": image_shape} if mask in flows.models.IMAGE_MASKS else {}


_CASES = [
    ("parity", (5, 1, 1)),
    ("parity", (6, 1, 1)),
    ("checkerboard", (3, 4, 1)),
    ("checkerboard", (3, 3, 2)),
    ("channel", (2, 3, 2)),
    ("channel", (2, 2, 3)),
]


class RealNVPMaskTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        tf.random.set_seed(0)
        self.rng = np.random.default_rng(0)

    @parameterized.parameters(*_CASES)
    def test_each_coupling_changes_exactly_the_unmasked_units(self, mask, image_shape):
        """Perturbation test: coupling k copies its fixed units; a change in a
        fixed unit moves the others (it conditions them); a change in a free
        unit moves only itself (the coupling is elementwise on free units)."""
        d = int(np.prod(image_shape))
        flow = flows.make_flow(
            "realnvp",
            d,
            3,
            HIDDEN,
            mask=mask,
            batch_norm=False,
            dtype=tf.float64,
            seed=1,
            **_shape_kwargs(mask, image_shape),
        )
        couplings = _couplings(flow)
        self.assertLen(couplings, 3)
        x = self.rng.normal(size=(16, d))
        for k, coupling in enumerate(couplings):
            fixed = _expected_fixed(mask, image_shape, k)
            self.assertTrue(fixed.any() and (~fixed).any())
            if k > 0:  # Alternation: the complement of the previous layer's set.
                self.assertAllEqual(fixed, ~_expected_fixed(mask, image_shape, k - 1))
            y = coupling.forward(tf.constant(x)).numpy()
            self.assertAllEqual(y[:, fixed], x[:, fixed])
            self.assertTrue(np.all(y[:, ~fixed] != x[:, ~fixed]))
            for j in range(d):
                x_new = x.copy()
                x_new[:, j] += 0.5
                y_new = coupling.forward(tf.constant(x_new)).numpy()
                changed = np.any(y_new != y, axis=0)  # [D]
                if fixed[j]:
                    expected = ~fixed.copy()
                    expected[j] = True
                else:
                    expected = np.arange(d) == j
                self.assertAllEqual(changed, expected, msg=f"layer {k}, unit {j}")

    @parameterized.parameters(*_CASES)
    def test_round_trip_and_log_det_match_autodiff(self, mask, image_shape):
        d = int(np.prod(image_shape))
        flow = flows.make_flow(
            "realnvp",
            d,
            3,
            HIDDEN,
            mask=mask,
            dtype=tf.float64,
            seed=2,
            **_shape_kwargs(mask, image_shape),
        )
        flow = flows.with_training(flow, False)
        flow_test_util.randomize_batch_norm(flow, self.rng)
        # Round trip, fldj = -ildj and fldj = log|det| of the autodiff Jacobian (fresh tensors).
        flow_test_util.check_bijector(
            self, flow, self.rng.normal(size=(8, d)), rtol=1e-8, atol=1e-8
        )
        # The log-det of one coupling is the sum of its log-scales over the free units only.
        coupling = _couplings(flow)[0]
        fixed = _expected_fixed(mask, image_shape, 0)
        x = self.rng.normal(size=(8, d))
        conditioner = coupling.parameters["bijectors"][1].parameters["shift_and_log_scale_fn"]
        _, log_scale = conditioner(tf.constant(x[:, fixed]), int((~fixed).sum()))
        self.assertAllClose(
            coupling.forward_log_det_jacobian(tf.constant(x), event_ndims=1),
            tf.reduce_sum(log_scale, -1),
        )

    def test_every_variable_is_tracked_and_trained(self):
        image_shape, num_layers = (2, 3, 2), 2
        d = int(np.prod(image_shape))
        density = flows.make_density(
            "realnvp", d, num_layers, HIDDEN, mask="channel", image_shape=image_shape, seed=0
        )
        variables = density.trainable_variables
        expected = num_layers * 2 * 2 * (len(HIDDEN) + 1) + 2 * num_layers  # s, t nets; BN
        self.assertLen(variables, expected)
        self.assertLen({v.ref() for v in variables}, expected)
        flow_test_util.check_every_variable_trains(
            self, density, self.rng.normal(size=(32, d)), variables
        )

    def test_batch_norm_statistics_reach_through_the_nested_couplings(self):
        d = 12
        flow = flows.make_flow(
            "realnvp", d, 2, HIDDEN, mask="checkerboard", image_shape=(3, 4, 1), dtype=tf.float64
        )
        x = self.rng.normal(size=(1000, d)) * 2.0 + 3.0
        u = flows.set_batch_norm_statistics(flow, tf.constant(x)).numpy()
        self.assertAllClose(u.mean(0), np.zeros(d), atol=1e-10)  # the last batch norm whitens
        self.assertAllClose(flows.with_training(flow, False).inverse(tf.constant(x)), u)

    def test_halves_is_the_default_and_unchanged(self):
        x = tf.constant(self.rng.normal(size=(4, 6)), tf.float32)
        default = flows.make_flow("realnvp", 6, 2, HIDDEN, batch_norm=False, seed=3)
        halves = flows.make_flow("realnvp", 6, 2, HIDDEN, batch_norm=False, seed=3, mask="halves")
        self.assertAllEqual(default.forward(x), halves.forward(tf.identity(x)))
        first = default.parameters["bijectors"][0]
        self.assertAllEqual(first.forward(x)[:, :3], x[:, :3])  # coupling 0: first half fixed

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "needs `image_shape"):
            flows.make_flow("realnvp", 4, 2, HIDDEN, mask="checkerboard")
        with self.assertRaisesRegex(ValueError, "event_size"):
            flows.make_flow("realnvp", 5, 2, HIDDEN, mask="checkerboard", image_shape=(2, 2, 1))
        with self.assertRaisesRegex(ValueError, r"\(H, W, C\)"):
            flows.make_flow("realnvp", 4, 2, HIDDEN, mask="checkerboard", image_shape=(2, 2))
        with self.assertRaisesRegex(ValueError, r"\(H, W, C\)"):
            flows.make_flow("realnvp", 4, 2, HIDDEN, mask="checkerboard", image_shape=(-2, -2, 1))
        with self.assertRaisesRegex(ValueError, "at least 2 pixels"):
            flows.make_flow("realnvp", 2, 2, HIDDEN, mask="checkerboard", image_shape=(1, 1, 2))
        with self.assertRaisesRegex(ValueError, "C >= 2"):
            flows.make_flow("realnvp", 784, 2, HIDDEN, mask="channel", image_shape=(28, 28, 1))
        with self.assertRaisesRegex(ValueError, "Unknown `mask`"):
            flows.make_flow("realnvp", 4, 2, HIDDEN, mask="stripes", image_shape=(2, 2, 1))
        with self.assertRaisesRegex(ValueError, "realnvp option"):
            flows.make_flow("maf", 4, 2, HIDDEN, mask="checkerboard", image_shape=(2, 2, 1))
        with self.assertRaisesRegex(ValueError, "only used by"):
            flows.make_flow("realnvp", 4, 2, HIDDEN, image_shape=(2, 2, 1))
        with self.assertRaisesRegex(ValueError, "only used by"):
            flows.make_flow("realnvp", 4, 2, HIDDEN, mask="parity", image_shape=(2, 2, 1))
        with self.assertRaisesRegex(ValueError, "event_size >= 2"):
            flows.make_flow("realnvp", 1, 2, HIDDEN, mask="parity")


class CouplingInitTest(tf.test.TestCase, parameterized.TestCase):
    """The MAF code's coupling nets read the whole masked D-vector, so their first layer is
    initialized as N(0, 1) / sqrt(D + 1); the later layers as N(0, 1) / sqrt(fan_in + 1)."""

    @parameterized.parameters("halves", "parity")
    def test_make_flow_scales_the_first_layer_by_the_event_size(self, mask):
        d, hidden = 64, (512,)
        flow = flows.make_flow("realnvp", d, 2, hidden, mask=mask, batch_norm=False, seed=0)
        conditioners = [m for m in flow.submodules if isinstance(m, flows.CouplingConditioner)]
        self.assertLen(conditioners, 2)
        for conditioner in conditioners:
            for net in (conditioner.scale_net, conditioner.shift_net):
                first, second = (w.numpy() for w in net.weights)
                self.assertEqual(first.shape, (d // 2, 512))
                # 16,384 draws per layer: 2% is 3.6 standard errors of the sample std.
                self.assertAllClose(first.std(), 1 / np.sqrt(d + 1), rtol=0.02)
                self.assertAllClose(second.std(), 1 / np.sqrt(512 + 1), rtol=0.02)

    def test_conditioner_default_is_its_own_fan_in(self):
        conditioner = flows.CouplingConditioner(100, 100, [400], seed=1)
        first = conditioner.scale_net.weights[0].numpy()
        self.assertAllClose(first.std(), 1 / np.sqrt(100 + 1), rtol=0.02)
        with self.assertRaisesRegex(ValueError, "init_fan_in"):
            flows.CouplingConditioner(4, 4, [8], init_fan_in=0)


class RealNVPMaskConfigTest(tf.test.TestCase):
    def _config(self, mask):
        config = mnist_configs.get_config("realnvp5")
        config.model.hidden_units = (4,)
        config.model.num_layers = 2
        config.model.realnvp_mask = mask
        return config

    def test_default_is_the_maf_code_parity(self):
        self.assertEqual(mnist_configs.get_config("realnvp5").model.realnvp_mask, "parity")

    def test_mnist_parity_fixes_odd_then_even_columns(self):
        model = flows_density.build_model(self._config("parity"))
        x = tf.random.stateless_normal([2, 784], [3, 4])
        h = x
        for k, coupling in enumerate(_couplings(model.flow)):
            y = coupling.forward(h).numpy().reshape(2, 28, 28)
            columns = np.arange(28) % 2 == (1 if k % 2 == 0 else 0)  # 28 is even
            before = h.numpy().reshape(2, 28, 28)
            self.assertAllEqual(y[:, :, columns], before[:, :, columns])
            self.assertTrue(np.all(y[:, :, ~columns] != before[:, :, ~columns]))
            h = tf.constant(y.reshape(2, 784))

    def test_mnist_checkerboard(self):
        model = flows_density.build_model(self._config("checkerboard"))
        first = _couplings(model.flow)[0]
        x = tf.random.stateless_normal([2, 784], [1, 2])
        y = first.forward(x).numpy().reshape(2, 28, 28)
        h, w = np.meshgrid(np.arange(28), np.arange(28), indexing="ij")
        self.assertAllEqual(
            y[:, (h + w) % 2 == 0], x.numpy().reshape(2, 28, 28)[:, (h + w) % 2 == 0]
        )
        self.assertTrue(np.all(np.isfinite(model.log_prob(x, training=False).numpy())))

    def test_mnist_channel_mask_is_a_clear_error(self):
        with self.assertRaisesRegex(ValueError, "C >= 2"):
            flows_density.build_model(self._config("channel"))

    def test_other_flows_ignore_the_realnvp_mask(self):
        shapes = []
        for mask in ("parity", "checkerboard"):
            config = self._config(mask)
            config.model.flow = "maf"
            model = flows_density.build_model(config)
            shapes.append([tuple(v.shape) for v in model.trainable_variables])
        self.assertEqual(shapes[0], shapes[1])


if __name__ == "__main__":
    tf.test.main()
