"""Tests for common/attention.py: the spatial transformer and AIR's z_where glimpses."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from common import attention


def _np_affine_grid(theta, output_shape):
    """Loop re-derivation: output pixel (i, j) has normalized centre (-1 + 2j/(w-1), ...)."""
    h, w = output_shape
    grid = np.zeros([theta.shape[0], h, w, 2])
    for b in range(theta.shape[0]):
        for i in range(h):
            for j in range(w):
                x_t = -1.0 + 2.0 * j / (w - 1) if w > 1 else 0.0
                y_t = -1.0 + 2.0 * i / (h - 1) if h > 1 else 0.0
                grid[b, i, j] = theta[b] @ np.array([x_t, y_t, 1.0])
    return grid


def _np_resample(images, grid):
    """Loop re-derivation of bilinear sampling with a tent kernel and zero padding."""
    batch, height, width, channels = images.shape
    out = np.zeros(grid.shape[:3] + (channels,))
    for b in range(batch):
        for i in range(grid.shape[1]):
            for j in range(grid.shape[2]):
                x = (grid[b, i, j, 0] + 1.0) * (width - 1) / 2.0
                y = (grid[b, i, j, 1] + 1.0) * (height - 1) / 2.0
                for row in range(height):
                    for col in range(width):
                        weight = max(0.0, 1.0 - abs(x - col)) * max(0.0, 1.0 - abs(y - row))
                        out[b, i, j] += weight * images[b, row, col]
    return out


def _window_z_where(row0, col0, h, w, height, width):
    """z_where of the integer-aligned window rows row0..row0+h-1, cols col0..col0+w-1."""
    s_y, s_x = (h - 1) / (height - 1), (w - 1) / (width - 1)
    t_y = (2 * row0 + h - 1) / (height - 1) - 1.0
    t_x = (2 * col0 + w - 1) / (width - 1) - 1.0
    return [s_x, s_y, t_x, t_y]


def _shift(image, dy, dx):
    """np.roll along (rows, cols) with zero fill instead of wrap-around."""
    out = np.roll(image, (dy, dx), axis=(0, 1))
    if dy > 0:
        out[:dy] = 0
    elif dy < 0:
        out[dy:] = 0
    if dx > 0:
        out[:, :dx] = 0
    elif dx < 0:
        out[:, dx:] = 0
    return out


class AttentionTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.rng = np.random.default_rng(0)

    def test_affine_grid_matches_numpy(self):
        theta = self.rng.normal(size=[3, 2, 3])
        grid = attention.affine_grid(tf.constant(theta), (4, 5))
        self.assertEqual(grid.shape, (3, 4, 5, 2))
        self.assertAllClose(grid, _np_affine_grid(theta, (4, 5)))

    def test_identity_grid_is_pixel_centres(self):
        grid = attention.affine_grid(tf.constant([[[1.0, 0, 0], [0, 1, 0]]]), (3, 5)).numpy()
        self.assertAllClose(grid[0, 0, :, 0], [-1, -0.5, 0, 0.5, 1])  # x along the width
        self.assertAllClose(grid[0, :, 0, 1], [-1, 0, 1])  # y along the height

    @parameterized.parameters(tf.float32, tf.float64)
    def test_identity_returns_image(self, dtype):
        images = tf.constant(self.rng.normal(size=[2, 5, 7, 3]), dtype)
        z_where = tf.constant([[1.0, 1.0, 0.0, 0.0]] * 2, dtype)
        self.assertAllClose(attention.extract_glimpse(images, z_where, (5, 7)), images)
        self.assertAllClose(attention.write_glimpse(images, z_where, (5, 7)), images)

    @parameterized.parameters((1, 2), (-2, 0), (0, -3), (3, 1), (-1, -1))
    def test_integer_translation_is_shift(self, dy, dx):
        height, width = 6, 7
        images = self.rng.normal(size=[1, height, width, 2])
        # Output pixel (i, j) samples source pixel (i - dy, j - dx).
        t_x, t_y = -2.0 * dx / (width - 1), -2.0 * dy / (height - 1)
        z_where = tf.constant([[1.0, 1.0, t_x, t_y]], tf.float64)
        shifted = attention.extract_glimpse(images, z_where, (height, width))
        self.assertAllClose(shifted[0], _shift(images[0], dy, dx))

    @parameterized.parameters((0, 0, 4, 3), (2, 3, 3, 4), (5, 1, 3, 6))
    def test_crop_then_write_back(self, row0, col0, h, w):
        height, width = 8, 9
        images = self.rng.normal(size=[1, height, width, 2])
        z_where = tf.constant([_window_z_where(row0, col0, h, w, height, width)], tf.float64)
        glimpse = attention.extract_glimpse(images, z_where, (h, w))
        self.assertAllClose(glimpse[0], images[0, row0 : row0 + h, col0 : col0 + w])
        canvas = attention.write_glimpse(glimpse, z_where, (height, width))
        expected = np.zeros_like(images)
        expected[:, row0 : row0 + h, col0 : col0 + w] = images[:, row0 : row0 + h, col0 : col0 + w]
        self.assertAllClose(canvas, expected)  # the content inside, exact zeros outside

    def test_batch_of_transforms_matches_numpy(self):
        images = self.rng.normal(size=[3, 5, 6, 2])
        theta = np.array([[[1, 0, 0], [0, 1, 0]], [[0.6, 0.3, 0.2], [-0.2, 0.5, -0.4]]])
        theta = np.concatenate([theta, self.rng.normal(size=[1, 2, 3])])  # partly outside
        out = attention.resample(images, attention.affine_grid(tf.constant(theta), (4, 3)))
        self.assertAllClose(out, _np_resample(images, _np_affine_grid(theta, (4, 3))))

    def test_batch_of_z_where_equals_one_by_one(self):
        images = tf.constant(self.rng.normal(size=[3, 8, 8, 1]))
        z_where = tf.constant([[0.5, 0.4, 0.2, -0.3], [1.2, 0.9, -0.5, 0.1], [0.3, 0.3, 0.9, 0.9]])
        z_where = tf.cast(z_where, tf.float64)
        batched = attention.extract_glimpse(images, z_where, (4, 5))
        written = attention.write_glimpse(batched, z_where, (8, 8))
        for b in range(3):
            one = attention.extract_glimpse(images[b : b + 1], z_where[b : b + 1], (4, 5))
            self.assertAllClose(batched[b : b + 1], one)
            one = attention.write_glimpse(batched[b : b + 1], z_where[b : b + 1], (8, 8))
            self.assertAllClose(written[b : b + 1], one)

    @parameterized.parameters("random", "integer_aligned")
    def test_glimpses_equal_general_resample_with_gradients(self, which):
        """The separable glimpse path = resample(affine_grid(theta(z_where))), incl. gradients."""
        images = tf.constant(self.rng.normal(size=[3, 7, 6, 2]))
        glimpses = tf.constant(self.rng.normal(size=[3, 4, 3, 2]))
        if which == "random":
            z_where = tf.constant(self.rng.uniform(-0.9, 0.9, size=[3, 4]))
        else:  # Every sample point on a pixel centre: one-sided gradients must agree too.
            windows = [(0, 0), (2, 1), (3, 3)]
            z_where = tf.constant(
                [_window_z_where(r, c, 4, 3, 7, 6) for r, c in windows], tf.float64
            )

        def general(images, glimpses, z_where):
            theta = attention.z_where_to_theta(z_where)
            inverse = attention.z_where_to_theta(attention.invert_z_where(z_where))
            return (
                attention.resample(images, attention.affine_grid(theta, (4, 3))),
                attention.resample(glimpses, attention.affine_grid(inverse, (7, 6))),
            )

        def separable(images, glimpses, z_where):
            return (
                attention.extract_glimpse(images, z_where, (4, 3)),
                attention.write_glimpse(glimpses, z_where, (7, 6)),
            )

        args = [images, glimpses, z_where]
        weights = [tf.constant(self.rng.normal(size=s)) for s in [(3, 4, 3, 2), (3, 7, 6, 2)]]
        results = []
        for f in (general, separable):
            with tf.GradientTape() as tape:
                tape.watch(args)
                outputs = f(*args)
                loss = sum(tf.reduce_sum(o * w) for o, w in zip(outputs, weights, strict=True))
            results.append([*outputs, *tape.gradient(loss, args)])
        for g, s in zip(*results, strict=True):
            self.assertAllClose(g, s, atol=1e-10)

    def test_inverse_z_where_inverts_the_map(self):
        z_where = tf.constant(self.rng.uniform(0.2, 1.5, size=[4, 4]))
        z_where *= tf.constant([1.0, 1.0, 0.5, -0.5], tf.float64)  # signed shifts

        def homogeneous(theta):
            return tf.concat([theta, tf.constant([[[0.0, 0.0, 1.0]]] * 4, tf.float64)], axis=1)

        forward = homogeneous(attention.z_where_to_theta(z_where))
        backward = homogeneous(attention.z_where_to_theta(attention.invert_z_where(z_where)))
        self.assertAllClose(forward @ backward, np.tile(np.eye(3), [4, 1, 1]))

    def test_zero_outside_and_non_finite_points(self):
        images = tf.ones([2, 4, 4, 1])
        far = tf.constant([[0.5, 0.5, 5.0, 0.0], [0.5, 0.5, -1e9, 1e9]])
        self.assertAllEqual(attention.extract_glimpse(images, far, (3, 3)), tf.zeros([2, 3, 3, 1]))
        grid = tf.constant([[[[np.nan, 0.0], [np.inf, -np.inf]]]], tf.float32)
        self.assertAllEqual(attention.resample(images[:1], grid), tf.zeros([1, 1, 2, 1]))
        # Half a pixel beyond the border: half the border value (zero padding).
        grid = tf.constant([[[[-1.0 - 1.0 / 3.0, 0.0]]]])  # x = -0.5 pixels, W = 4
        self.assertAllClose(attention.resample(images[:1], grid), [[[[0.5]]]])

    def test_gradient_wrt_theta_matches_finite_differences(self):
        images = tf.constant(self.rng.normal(size=[2, 5, 6, 2]))
        theta = tf.constant(self.rng.normal(size=[2, 2, 3]) * 0.5 + [[1, 0, 0], [0, 1, 0]])

        def f(theta):
            return attention.resample(images, attention.affine_grid(theta, (3, 4)))

        theoretical, numerical = tf.test.compute_gradient(f, [theta], delta=1e-6)
        self.assertGreater(np.abs(theoretical[0]).max(), 0.1)
        self.assertAllClose(theoretical[0], numerical[0], atol=1e-6)

    @parameterized.parameters("extract", "write")
    def test_gradient_wrt_z_where_matches_finite_differences(self, which):
        images = tf.constant(self.rng.normal(size=[2, 6, 5, 1]))
        z_where = tf.constant([[0.6, 0.45, 0.13, -0.21], [0.8, 1.1, -0.32, 0.17]], tf.float64)

        def f(z_where):
            if which == "extract":
                return attention.extract_glimpse(images, z_where, (4, 3))
            return attention.write_glimpse(images, z_where, (7, 6))

        theoretical, numerical = tf.test.compute_gradient(f, [z_where], delta=1e-6)
        self.assertGreater(np.abs(theoretical[0]).max(), 0.1)
        self.assertAllClose(theoretical[0], numerical[0], atol=1e-6)

    def test_gradient_wrt_images_matches_finite_differences(self):
        images = tf.constant(self.rng.normal(size=[2, 4, 5, 2]))
        z_where = tf.constant([[0.7, 0.5, 0.2, -0.3], [1.3, 0.9, -0.4, 0.35]], tf.float64)

        def f(images):
            return attention.extract_glimpse(images, z_where, (3, 3))

        theoretical, numerical = tf.test.compute_gradient(f, [images])
        self.assertAllClose(theoretical[0], numerical[0], atol=1e-8)

    def _glimpse_and_grads(self, images, z_where):
        with tf.GradientTape() as tape:
            tape.watch([images, z_where])
            glimpse = attention.extract_glimpse(images, z_where, (4, 4))
            canvas = attention.write_glimpse(glimpse * glimpse, z_where, (7, 8))
            loss = tf.reduce_sum(canvas * tf.range(8, dtype=canvas.dtype)[:, None])
        return (glimpse, canvas, *tape.gradient(loss, [images, z_where]))

    def test_xla_and_tf_function_match_eager(self):
        images = tf.constant(self.rng.normal(size=[3, 7, 8, 2]), tf.float32)
        z_where = tf.constant(self.rng.uniform(0.3, 0.9, size=[3, 4]), tf.float32)
        eager = self._glimpse_and_grads(images, z_where)
        xla = tf.function(self._glimpse_and_grads, jit_compile=True)(images, z_where)
        dynamic = tf.function(
            self._glimpse_and_grads,
            input_signature=[tf.TensorSpec([None] * 4), tf.TensorSpec([None, 4])],
        )(images, z_where)
        for e, x, d in zip(eager, xla, dynamic, strict=True):
            self.assertAllClose(e, x, rtol=1e-5, atol=1e-5)
            self.assertAllClose(e, d, rtol=1e-5, atol=1e-5)

    def test_bad_arguments_raise(self):
        with self.assertRaisesRegex(ValueError, "z_where"):
            attention.extract_glimpse(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 3]), (2, 2))
        with self.assertRaisesRegex(ValueError, "output_shape"):
            attention.affine_grid(tf.zeros([1, 2, 3]), (0, 2))
        with self.assertRaisesRegex(ValueError, "theta"):
            attention.affine_grid(tf.zeros([1, 3, 3]), (2, 2))


if __name__ == "__main__":
    tf.test.main()


# ---------------------------------------------------------------------------
# DRAW's Gaussian filterbank (Gregor et al. 2015, sec. 3.2).
# ---------------------------------------------------------------------------


def _np_filterbank(gx, gy, delta, sigma2, n, height, width):
    """Loop evaluation of eqs. 19-20, 25-26 with 1-based i and pixel positions a, b."""
    fx = np.zeros([n, width])
    fy = np.zeros([n, height])
    for i in range(1, n + 1):
        mu_x = gx + (i - n / 2 - 0.5) * delta
        mu_y = gy + (i - n / 2 - 0.5) * delta
        for a in range(1, width + 1):
            fx[i - 1, a - 1] = np.exp(-((a - mu_x) ** 2) / (2 * sigma2))
        for b in range(1, height + 1):
            fy[i - 1, b - 1] = np.exp(-((b - mu_y) ** 2) / (2 * sigma2))
    return fx / fx.sum(1, keepdims=True), fy / fy.sum(1, keepdims=True)


def _centred_raw(batch, log_sigma2, log_delta=0.0, log_gamma=0.0, gx=0.0, gy=0.0):
    row = [gx, gy, log_sigma2, log_delta, log_gamma]
    return tf.constant([row] * batch, tf.float32)


class GaussianFilterbankTest(tf.test.TestCase, parameterized.TestCase):
    def test_params_follow_eqs_21_to_24(self):
        raw = np.random.default_rng(0).normal(size=[4, 5]).astype(np.float32)
        p = attention.filterbank_params(raw, 5, (20, 30))  # B = 20 rows, A = 30 columns
        self.assertAllClose(p.center_x, 31 / 2 * (raw[:, 0] + 1))
        self.assertAllClose(p.center_y, 21 / 2 * (raw[:, 1] + 1))
        self.assertAllClose(p.sigma2, np.exp(raw[:, 2]))
        self.assertAllClose(p.delta, (30 - 1) / (5 - 1) * np.exp(raw[:, 3]))
        self.assertAllClose(p.gamma, np.exp(raw[:, 4]))

    @parameterized.parameters((2, 28, 28), (5, 28, 28), (3, 12, 17), (1, 9, 9))
    def test_matches_a_direct_evaluation_and_rows_sum_to_one(self, n, height, width):
        rng = np.random.default_rng(n + height)
        gx = rng.uniform(-2, width + 2, 3)
        gy = rng.uniform(-2, height + 2, 3)
        delta = rng.uniform(0.3, 4, 3)
        sigma2 = rng.uniform(0.3, 6, 3)
        fx, fy = attention.gaussian_filterbank(gx, gy, delta, sigma2, n, (height, width))
        self.assertEqual(fx.shape, (3, n, width))
        self.assertEqual(fy.shape, (3, n, height))
        for b in range(3):
            want_x, want_y = _np_filterbank(gx[b], gy[b], delta[b], sigma2[b], n, height, width)
            self.assertAllClose(fx[b], want_x, atol=1e-6)
            self.assertAllClose(fy[b], want_y, atol=1e-6)
        self.assertAllClose(tf.reduce_sum(fx, -1), np.ones([3, n]), atol=1e-6)
        self.assertAllClose(tf.reduce_sum(fy, -1), np.ones([3, n]), atol=1e-6)

    def test_rows_stay_finite_far_outside_the_image(self):
        fx, _ = attention.gaussian_filterbank([500.0], [500.0], [1.0], [0.01], 3, (10, 10))
        self.assertTrue(np.all(np.isfinite(fx)))
        self.assertAllClose(fx[0, :, -1], np.ones(3))  # all mass on the nearest pixel

    def test_a_full_size_centred_sharp_read_returns_the_image(self):
        x = np.random.default_rng(1).uniform(size=[2, 28, 28]).astype(np.float32)
        # N = 28, g~ = 0 (the centre), delta~ = 1 -> delta = 27 / 27 = 1, sigma^2 = 0.01, gamma = 1.
        window = attention.filterbank_params(_centred_raw(2, np.log(0.01)), 28, (28, 28))
        self.assertAllClose(attention.filterbank_read(x, window, 28), x, atol=1e-5)

    def test_read_scales_by_gamma_and_handles_channels(self):
        x = np.random.default_rng(2).uniform(size=[2, 12, 10, 3]).astype(np.float32)
        raw = np.random.default_rng(3).normal(size=[2, 5]).astype(np.float32) * 0.3
        window = attention.filterbank_params(raw, 4, (12, 10))
        patch = attention.filterbank_read(x, window, 4)
        fx, fy = attention.gaussian_filterbank(*window[:4], 4, (12, 10))
        for b in range(2):
            for c in range(3):
                want = np.exp(raw[b, 4]) * fy[b].numpy() @ x[b, :, :, c] @ fx[b].numpy().T
                self.assertAllClose(patch[b, :, :, c], want, atol=1e-5)
        # A list of single-channel images through one window: the same glimpses, stacked.
        listed = attention.filterbank_read([x[..., c] for c in range(3)], window, 4)
        self.assertAllClose(listed, patch, atol=1e-6)
        written = attention.filterbank_write(patch, window, (12, 10))
        self.assertEqual(written.shape, (2, 12, 10, 3))
        for b in range(2):
            for c in range(3):
                want = fy[b].numpy().T @ patch[b, :, :, c].numpy() @ fx[b].numpy()
                self.assertAllClose(written[b, :, :, c], want / np.exp(raw[b, 4]), atol=1e-5)
                single = attention.filterbank_write(patch[..., c], window, (12, 10))
                self.assertAllClose(single[b], want / np.exp(raw[b, 4]), atol=1e-5)
        with self.assertRaisesRegex(ValueError, "share one"):
            attention.filterbank_read([x[..., 0], x[:, :6, :, 0]], window, 4)

    def test_write_of_a_read_puts_the_mass_back_in_place(self):
        x = np.zeros([1, 20, 20], np.float32)
        x[0, 6, 13] = 1.0  # row 6, column 13 (0-based) = pixel (a, b) = (14, 7)
        # A 5x5 window centred on that pixel, stride 1, sharp filters, gamma = 2.
        gx, gy = 14 / 21 * 2 - 1, 7 / 21 * 2 - 1  # g = (A + 1)/2 (g~ + 1)
        raw = tf.constant([[gx, gy, np.log(0.02), np.log(4 / 19), np.log(2.0)]], tf.float32)
        window = attention.filterbank_params(raw, 5, (20, 20))
        self.assertAllClose([window.center_x[0], window.center_y[0], window.delta[0]], [14, 7, 1])
        patch = attention.filterbank_read(x, window, 5)
        self.assertAllClose(patch[0, 2, 2], 2.0, atol=1e-4)  # gamma times the pixel
        back = attention.filterbank_write(patch, window, (20, 20)).numpy()
        self.assertAllClose(back, x, atol=1e-4)

    def test_gradients_reach_all_five_parameters(self):
        rng = np.random.default_rng(4)
        x = tf.constant(rng.uniform(size=[3, 16, 16]), tf.float32)
        raw = tf.Variable(rng.normal(size=[3, 5]).astype(np.float32) * 0.3)
        patch = tf.constant(rng.normal(size=[3, 4, 4]), tf.float32)
        weights_r = tf.constant(rng.normal(size=[3, 3, 3]), tf.float32)
        weights_w = tf.constant(rng.normal(size=[3, 16, 16]), tf.float32)
        with tf.GradientTape() as tape:
            read = attention.filterbank_read(x, attention.filterbank_params(raw, 3, (16, 16)), 3)
            write = attention.filterbank_write(
                patch, attention.filterbank_params(raw, 4, (16, 16)), (16, 16)
            )
            loss = tf.reduce_sum(read * weights_r) + tf.reduce_sum(write * weights_w)
        grad = tape.gradient(loss, raw).numpy()
        self.assertTrue(np.all(np.isfinite(grad)))
        self.assertTrue(np.all(np.abs(grad) > 1e-6), grad)

    def test_xla_gives_the_same_read_and_write(self):
        rng = np.random.default_rng(5)
        x = tf.constant(rng.uniform(size=[2, 28, 28, 2]), tf.float32)
        raw = tf.constant(rng.normal(size=[2, 5]) * 0.3, tf.float32)

        def fn(x, raw):
            w = attention.filterbank_params(raw, 5, (28, 28))
            return attention.filterbank_write(attention.filterbank_read(x, w, 5), w, (28, 28))

        self.assertAllClose(tf.function(fn, jit_compile=True)(x, raw), fn(x, raw), atol=1e-5)

    def test_window_spans_the_outer_filter_centres(self):
        window = attention.FilterbankParams(*[tf.constant([v]) for v in (10.0, 5.0, 2.0, 1.0, 1.0)])
        # 1-based centres 10 +- 4 (x) and 5 +- 4 (y) -> 0-based pixels.
        self.assertAllClose(attention.filterbank_window(window, 5), [[5.0, 0.0, 13.0, 8.0]])

    def test_bad_shapes_raise(self):
        with self.assertRaisesRegex(ValueError, r"\[batch, 5\]"):
            attention.filterbank_params(tf.zeros([2, 4]), 3, (28, 28))
        with self.assertRaisesRegex(ValueError, "glimpse_size"):
            attention.filterbank_params(tf.zeros([2, 5]), 0, (28, 28))
        with self.assertRaisesRegex(ValueError, "square"):
            w = attention.filterbank_params(tf.zeros([1, 5]), 3, (28, 28))
            attention.filterbank_write(tf.zeros([1, 3, 2]), w, (28, 28))
