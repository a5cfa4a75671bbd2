"""A plain Keras DRAW: the baseline `benchmarks/draw_step.py` times `draw.DRAW` against.

The model of Gregor et al. (2015), sec. 2 (eqs. 3-12) and sec. 3.2 (eqs. 19-29), written the way
a straightforward Keras port writes it: `tf_keras.layers.LSTMCell` and `Dense` layers, a Python
loop over the T steps (unrolled when traced), the filterbanks built from their formula and
normalized by their sum. Same sizes and pixel convention (1-based, `g~ = 0` at the centre) as
`draw.DRAW`; its initial LSTM states are zeros (`draw.DRAW` learns them, starting from zeros)
and its weights start from Keras's initializers. For the same weights and noise the two give
the same negative ELBO and gradients (tests/benchmarks/test_keras_draw.py), so a timing of both
compares two codes for one model. Not used by the package.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras


class KerasDRAW(tf_keras.Model):
    """DRAW with or without Gaussian attention, as a plain `tf_keras.Model`.

    `call(x, eps)` takes binary images `[B, H, W]` and the noise `[T, B, latent_size]` of the T
    reparameterized draws and returns the negative ELBO `[B]` in nats (L^x + L^z, eqs. 9-12).
    """

    def __init__(
        self,
        num_steps: int,
        lstm_size: int,
        latent_size: int,
        attention: bool,
        read_size: int,
        write_size: int,
        image_shape: tuple[int, int] = (28, 28),
    ):
        super().__init__()
        self.num_steps, self.latent_size, self.attention = num_steps, latent_size, attention
        self.read_size, self.write_size, self.lstm_size = read_size, write_size, lstm_size
        self.height, self.width = image_shape
        self.encoder = tf_keras.layers.LSTMCell(lstm_size)  # unit_forget_bias: b_f starts at 1
        self.decoder = tf_keras.layers.LSTMCell(lstm_size)
        self.posterior = tf_keras.layers.Dense(2 * latent_size)  # mu, log sigma
        patch = write_size**2 if attention else self.height * self.width
        self.patch = tf_keras.layers.Dense(patch)
        if attention:
            self.read_window = tf_keras.layers.Dense(5)
            self.write_window = tf_keras.layers.Dense(5)
        self.canvas_bias = self.add_weight(
            name="canvas_bias", shape=(self.height, self.width), initializer="zeros"
        )  # c_0

    def filterbank(self, h, window_layer, n):
        """`F_X [B, n, W]`, `F_Y [B, n, H]` and `gamma [B, 1, 1]` from h (eqs. 19-26)."""
        gx, gy, log_sigma2, log_delta, log_gamma = tf.split(window_layer(h), 5, axis=1)
        gx = (self.width + 1) / 2 * (gx + 1)
        gy = (self.height + 1) / 2 * (gy + 1)
        delta = (max(self.height, self.width) - 1) / (n - 1) * tf.exp(log_delta)
        sigma2 = tf.exp(log_sigma2)[:, :, None]
        offsets = tf.range(1, n + 1, dtype=tf.float32) - n / 2 - 0.5
        fx = tf.exp(
            -tf.square(tf.range(1.0, self.width + 1) - (gx + offsets * delta)[:, :, None])
            / (2 * sigma2)
        )
        fy = tf.exp(
            -tf.square(tf.range(1.0, self.height + 1) - (gy + offsets * delta)[:, :, None])
            / (2 * sigma2)
        )
        fx = fx / (tf.reduce_sum(fx, axis=2, keepdims=True) + 1e-8)
        fy = fy / (tf.reduce_sum(fy, axis=2, keepdims=True) + 1e-8)
        return fx, fy, tf.exp(log_gamma)[:, :, None]

    def read(self, x, x_hat, h_dec):
        """`[B, 2 N^2]`: `gamma [F_Y x F_X^T, F_Y x_hat F_X^T]`, the two glimpses interleaved
        pixel by pixel (eq. 27)."""
        batch = tf.shape(x)[0]
        if not self.attention:
            return tf.concat([tf.reshape(x, [batch, -1]), tf.reshape(x_hat, [batch, -1])], 1)
        fx, fy, gamma = self.filterbank(h_dec, self.read_window, self.read_size)
        glimpses = [gamma * tf.matmul(fy, tf.matmul(im, fx, transpose_b=True)) for im in (x, x_hat)]
        return tf.reshape(tf.stack(glimpses, -1), [batch, -1])

    def write(self, h_dec):
        """`[B, H, W]`: `(1 / gamma) F_Y^T w F_X` (eq. 29), or a linear map of h_dec."""
        batch = tf.shape(h_dec)[0]
        w = self.patch(h_dec)
        if not self.attention:
            return tf.reshape(w, [batch, self.height, self.width])
        fx, fy, gamma = self.filterbank(h_dec, self.write_window, self.write_size)
        w = tf.reshape(w, [batch, self.write_size, self.write_size])
        return tf.matmul(fy, tf.matmul(w, fx), transpose_a=True) / gamma

    def call(self, x, eps):
        batch = tf.shape(x)[0]
        zeros = tf.zeros([batch, self.lstm_size])
        enc_state, dec_state, h_dec = [zeros, zeros], [zeros, zeros], zeros
        canvas = tf.zeros_like(x) + self.canvas_bias
        kl = tf.zeros([batch])
        for t in range(self.num_steps):
            r = self.read(x, x - tf.sigmoid(canvas), h_dec)
            h_enc, enc_state = self.encoder(tf.concat([r, h_dec], 1), enc_state)
            mu, log_sigma = tf.split(self.posterior(h_enc), 2, axis=1)
            sigma = tf.exp(log_sigma)
            z = mu + sigma * eps[t]
            h_dec, dec_state = self.decoder(z, dec_state)
            canvas = canvas + self.write(h_dec)
            kl += 0.5 * tf.reduce_sum(tf.square(mu) + tf.square(sigma) - 2 * log_sigma - 1, 1)
        bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=canvas)
        return tf.reduce_sum(bce, axis=[1, 2]) + kl
