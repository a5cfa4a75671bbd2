"""DRAW: the Deep Recurrent Attentive Writer (Gregor et al. 2015, sec. 2-3), a Sonnet 2 module.

One step t = 1..T (sec. 2, eqs. 3-8):

    x_hat_t = x - sigmoid(c_{t-1})                      error image
    r_t     = read(x, x_hat_t, h_dec_{t-1})
    h_enc_t = LSTM_enc(h_enc_{t-1}, [r_t, h_dec_{t-1}])
    z_t     ~ Q(Z_t | h_enc_t) = N(mu_t, sigma_t),  mu_t = W(h_enc_t), sigma_t = exp(W(h_enc_t))
    h_dec_t = LSTM_dec(h_dec_{t-1}, z_t)
    c_t     = c_{t-1} + write(h_dec_t)

and D(X | c_T) = Bernoulli(logits = c_T) (sec. 2.1). `c_0` and both LSTMs' initial states are
learned. With attention, read and write use Gaussian filterbanks (sec. 3.2,
`common.attention`): `read` is `gamma [F_Y x F_X^T, F_Y x_hat F_X^T]` (eq. 27) and `write` is
`(1/gamma_hat) F_Y_hat^T w_t F_X_hat` with the patch `w_t = W(h_dec_t)` (eqs. 28-29); each
window's five parameters are a separate linear map of `h_dec` (eq. 21). Without attention
(sec. 3.1) `read` is `[x, x_hat_t]` and `write` a linear map of `h_dec_t` to the image.

Losses (sec. 2.1, eqs. 9-12), per image, in nats: `L^x = -log D(x | c_T)` summed over pixels and
`L^z = sum_t KL(N(mu_t, sigma_t) || N(0, I))` in closed form (TFP), whose per-step constant is
`-|z|/2` (the paper prints `-T/2`); `L = L^x + L^z` is the negative ELBO.

Symbols: B batch, H x W image (B x A in the paper), T steps, Z latent size per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import sonnet as snt
import tensorflow as tf
import tensorflow_probability as tfp

from common import attention, distribute, precision

tfd = tfp.distributions


class Windows(NamedTuple):
    """Attention windows of every step: `FilterbankParams` fields stacked to `[T, B]`."""

    read: attention.FilterbankParams | None
    write: attention.FilterbankParams | None


class DRAWOutput(NamedTuple):
    """What `DRAW.__call__` returns.

    Attributes:
      canvas_logits: `[T, B, H, W]`, `c_1 .. c_T` (logits of the Bernoulli means).
      writes: `[T, B, H, W]`, `write(h_dec_t)`, so `c_t = c_0 + sum_{s <= t} writes_s`.
      mu, sigma: `[T, B, Z]`, the posterior of every step.
      z: `[T, B, Z]`, the samples.
      windows: the read and write windows (`None` fields without attention).
      reconstruction_loss: `[B]`, `L^x` (nats).
      latent_loss: `[B]`, `L^z` (nats).
      log_weight: `[B]`, `log p(x, z) - log q(z | x)` of the sample (nats); its mean over
        samples is the ELBO, its log-mean-exp the importance-sampled bound.
    """

    canvas_logits: tf.Tensor
    writes: tf.Tensor
    mu: tf.Tensor
    sigma: tf.Tensor
    z: tf.Tensor
    windows: Windows
    reconstruction_loss: tf.Tensor
    latent_loss: tf.Tensor
    log_weight: tf.Tensor

    @property
    def loss(self) -> tf.Tensor:
        """`[B]`, the negative ELBO `L^x + L^z` (eq. 12), nats."""
        return self.reconstruction_loss + self.latent_loss


class Generation(NamedTuple):
    """What `DRAW.generate` returns: `canvas_logits [T, N, H, W]` (`c~_1 .. c~_T`) and the
    write windows (`[T, N]` fields, `None` without attention)."""

    canvas_logits: tf.Tensor
    write_windows: attention.FilterbankParams | None


class DRAW(snt.Module):
    """DRAW for `H x W` binary images (sec. 2-3; module docstring).

    Args:
      image_shape: `(H, W)`.
      num_steps: T.
      lstm_size: units of each LSTM.
      latent_size: Z, latent units per step.
      attention: Gaussian filterbank read and write (sec. 3.2) if True, else sec. 3.1.
      read_size, write_size: N of the read and write windows (attention only).
      canvas_bias_init: optional `[H, W]` initial value of `c_0` (e.g. the logit of the mean
        training image); zeros otherwise.
      unroll: run the T steps as a Python loop (a graph T times larger: faster under
        `tf.function`, slow to compile under XLA) instead of one `tf.scan`.
      read_window_bias: initial bias of the read window's 5 outputs `(g~_X, g~_Y, log sigma^2,
        log delta~, log gamma)` (`common.attention.filterbank_params`); the paper states no
        initialization, zeros are Sonnet's default. With zeros a 2x2 read starts with stride
        `(28 - 1) / (2 - 1)`, i.e. on the corner pixels; e.g. `log delta~ = -1.1` puts its two
        filters 9 pixels apart around the centre.
      zero_write_init: start the write patch's linear map at zero weights (every write is 0
        at initialization, so the canvas starts at `c_0`), instead of Sonnet's default.

    Raises:
      ValueError: non-positive sizes, or `read_window_bias` not 5 numbers.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (28, 28),
        num_steps: int = 64,
        lstm_size: int = 256,
        latent_size: int = 100,
        attention: bool = True,
        read_size: int = 2,
        write_size: int = 5,
        canvas_bias_init=None,
        unroll: bool = False,
        read_window_bias: Sequence[float] = (0.0, 0.0, 0.0, 0.0, 0.0),
        zero_write_init: bool = False,
        name: str | None = None,
    ):
        super().__init__(name=name)
        if len(read_window_bias) != 5:
            raise ValueError(f"read_window_bias must be 5 numbers, got {read_window_bias}.")
        sizes = dict(
            num_steps=num_steps, lstm_size=lstm_size, latent_size=latent_size,
            read_size=read_size, write_size=write_size,
        )  # fmt: skip
        for key, value in sizes.items():
            if int(value) < 1:
                raise ValueError(f"DRAW {key} must be >= 1, got {value}.")
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_steps = int(num_steps)
        self.latent_size = int(latent_size)
        self.attention = bool(attention)
        self.read_size = int(read_size)
        self.write_size = int(write_size)
        self.unroll = bool(unroll)
        height, width = self.image_shape
        init = tf.zeros(self.image_shape) if canvas_bias_init is None else canvas_bias_init
        self.canvas_bias = tf.Variable(tf.cast(init, tf.float32), name="canvas_bias")  # c_0
        self.encoder = snt.LSTM(lstm_size, name="encoder")
        self.decoder = snt.LSTM(lstm_size, name="decoder")
        self.initial_states = {
            name: tf.Variable(tf.zeros([2, lstm_size]), name=f"{name}_initial_state")
            for name in ("encoder", "decoder")
        }  # learned (h_0, c_0) of each LSTM
        self.posterior_head = snt.Linear(2 * latent_size, name="posterior")  # mu, log sigma
        if self.attention:
            self.read_head = snt.Linear(
                5,
                b_init=lambda shape, dtype: tf.constant(
                    [float(b) for b in read_window_bias], dtype, shape
                ),
                name="read_window",
            )
            self.write_head = snt.Linear(5, name="write_window")
        patch_size = write_size * write_size if self.attention else height * width
        w_init = snt.initializers.Zeros() if zero_write_init else None
        self.patch_head = snt.Linear(
            patch_size, w_init=w_init, name="write_patch" if self.attention else "write_image"
        )

    # -- pieces -----------------------------------------------------------------
    def _initial_state(self, name: str, batch_size) -> snt.LSTMState:
        h0, c0 = tf.unstack(self.initial_states[name])
        tile = lambda v: tf.tile(v[None], [batch_size, 1])
        return snt.LSTMState(hidden=tile(h0), cell=tile(c0))

    def _net(self, network, *inputs):
        """`network(*inputs)` in the mixed-precision policy's dtype (`common.precision`; the
        LSTMs and linear heads), returning float32: the filterbanks, canvas, KL and likelihood
        stay float32."""
        return precision.run(network, *inputs)

    def _read(self, x, x_hat, h_dec):
        """`[B, 2 N^2]` (or `[B, 2 H W]`) and the raw read window `[B, 5]` (zeros without
        attention)."""
        batch = tf.shape(x)[0]
        if not self.attention:
            r = tf.concat([tf.reshape(x, [batch, -1]), tf.reshape(x_hat, [batch, -1])], 1)
            return r, tf.zeros([batch, 5])
        raw = self._net(self.read_head, h_dec)
        window = attention.filterbank_params(raw, self.read_size, self.image_shape)
        glimpse = attention.filterbank_read([x, x_hat], window, self.read_size)
        return tf.reshape(glimpse, [batch, 2 * self.read_size**2]), raw

    def _write(self, h_dec):
        """`[B, H, W]` and the raw write window `[B, 5]` (zeros without attention)."""
        batch = tf.shape(h_dec)[0]
        patch = self._net(self.patch_head, h_dec)
        if not self.attention:
            return tf.reshape(patch, [batch, *self.image_shape]), tf.zeros([batch, 5])
        raw = self._net(self.write_head, h_dec)
        window = attention.filterbank_params(raw, self.write_size, self.image_shape)
        patch = tf.reshape(patch, [batch, self.write_size, self.write_size])
        return attention.filterbank_write(patch, window, self.image_shape), raw

    def _windows(self, raw: tf.Tensor, size: int) -> attention.FilterbankParams | None:
        """`[T, B, 5]` raw outputs -> `FilterbankParams` of `[T, B]` fields."""
        if not self.attention:
            return None
        shape = tf.shape(raw)[:2]
        params = attention.filterbank_params(tf.reshape(raw, [-1, 5]), size, self.image_shape)
        return attention.FilterbankParams(*[tf.reshape(f, shape) for f in params])

    def _scan(self, step, eps, initial):
        """`tf.scan(step, eps, initial)`, or the same as a Python loop when `self.unroll`."""
        if not self.unroll:
            return tf.scan(step, eps, initializer=initial)
        carry, outputs = initial, []
        for t in range(self.num_steps):
            carry = step(carry, eps[t])
            outputs.append(carry)
        return tf.nest.map_structure(lambda *xs: tf.stack(xs), *outputs)

    # -- inference and generation -------------------------------------------------
    def __call__(self, x: tf.Tensor, seed: tf.Tensor) -> DRAWOutput:
        """Runs the T steps on binary images.

        The steps are a Python loop when `unroll` (the configs' default, faster under
        `tf.function`) or a `tf.scan` (one loop body however large T is, so XLA compiles the
        step once).

        Args:
          x: `[B, H, W]` or `[B, H, W, 1]` images with values in {0, 1}.
          seed: `[2]` int32 stateless seed; the noise of every step is drawn fresh from it.

        Raises:
          ValueError: images of another size.
        """
        x = tf.convert_to_tensor(x, tf.float32)
        if x.shape.rank == 4:
            x = x[..., 0]
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"DRAW expects [B, {self.image_shape}] images, got {x.shape}.")
        batch = tf.shape(x)[0]
        # Each example's noise depends on its place in the global batch only (the same on any
        # number of replicas).
        eps = distribute.global_batch_normal(
            [self.num_steps, batch, self.latent_size], seed, batch_axis=1
        )

        def step(carry, eps_t):
            enc_state, dec_state, canvas = carry["enc"], carry["dec"], carry["canvas"]
            x_hat = x - tf.sigmoid(canvas)
            r, raw_read = self._read(x, x_hat, dec_state.hidden)
            h_enc, enc_state = self._net(
                self.encoder, tf.concat([r, dec_state.hidden], 1), enc_state
            )
            mu, log_sigma = tf.split(self._net(self.posterior_head, h_enc), 2, axis=1)
            sigma = tf.exp(log_sigma)
            z = mu + sigma * eps_t
            h_dec, dec_state = self._net(self.decoder, z, dec_state)
            write, raw_write = self._write(h_dec)
            return dict(
                enc=enc_state, dec=dec_state, canvas=canvas + write, write=write,
                mu=mu, sigma=sigma, z=z, raw_read=raw_read, raw_write=raw_write,
            )  # fmt: skip

        zeros = tf.zeros([batch, self.latent_size])
        initial = dict(
            enc=self._initial_state("encoder", batch),
            dec=self._initial_state("decoder", batch),
            canvas=tf.tile(self.canvas_bias[None], [batch, 1, 1]),
            write=tf.zeros([batch, *self.image_shape]),
            mu=zeros, sigma=zeros, z=zeros,
            raw_read=tf.zeros([batch, 5]), raw_write=tf.zeros([batch, 5]),
        )  # fmt: skip
        out = self._scan(step, eps, initial)  # every field stacked to [T, ...]
        mu, sigma, z = out["mu"], out["sigma"], out["z"]
        likelihood = tfd.Independent(tfd.Bernoulli(logits=out["canvas"][-1]), 2)
        reconstruction_loss = -likelihood.log_prob(x)
        posterior = tfd.Normal(mu, sigma)
        prior = tfd.Normal(tf.zeros_like(mu), tf.ones_like(sigma))
        latent_loss = tf.reduce_sum(tfd.kl_divergence(posterior, prior), axis=[0, 2])
        log_weight = -reconstruction_loss + tf.reduce_sum(
            prior.log_prob(z) - posterior.log_prob(z), axis=[0, 2]
        )
        return DRAWOutput(
            canvas_logits=out["canvas"],
            writes=out["write"],
            mu=mu,
            sigma=sigma,
            z=z,
            windows=Windows(
                read=self._windows(out["raw_read"], self.read_size),
                write=self._windows(out["raw_write"], self.write_size),
            ),
            reconstruction_loss=reconstruction_loss,
            latent_loss=latent_loss,
            log_weight=log_weight,
        )

    def log_weights(self, x: tf.Tensor, num_samples: int, seed: tf.Tensor) -> tf.Tensor:
        """`[num_samples, B]` importance log-weights `log p(x, z^k) - log q(z^k | x)`, nats.

        `q` factorizes over the steps (each `z_t` is drawn given `z_{<t}`), so the sequence
        `z = (z_1 .. z_T)` drawn by `__call__` is one sample of `q(z | x)`; the log-mean-exp
        over samples is the importance-sampled bound of Burda et al. (2016, eq. 8).
        """
        x = tf.convert_to_tensor(x, tf.float32)
        tiled = tf.repeat(x[None], num_samples, axis=0)
        flat = tf.reshape(tiled, tf.concat([[-1], tf.shape(x)[1:]], 0))
        log_w = self(flat, seed).log_weight
        return tf.reshape(log_w, [num_samples, -1])

    def generate(
        self, num_samples: int, seed: tf.Tensor | None = None, z: tf.Tensor | None = None
    ) -> Generation:
        """Draws `num_samples` images from the prior (sec. 2.3): `z~_t ~ N(0, I)`, decoder and
        write only. `sigmoid(canvas_logits[t])` is the canvas after step t + 1.

        Args:
          num_samples: N.
          seed: `[2]` stateless seed of the prior draws.
          z: instead of drawing, decode these latents, `[T, N, Z]`.

        Raises:
          ValueError: neither or both of `seed` and `z`, or `z` of the wrong shape.
        """
        if (seed is None) == (z is None):
            raise ValueError("Pass exactly one of `seed` and `z`.")
        shape = [self.num_steps, num_samples, self.latent_size]
        if z is None:
            eps = tf.random.stateless_normal(shape, seed)
        else:
            eps = tf.convert_to_tensor(z, tf.float32)
            if eps.shape.as_list() != shape:
                raise ValueError(f"z must be {shape} (T, N, Z), got {eps.shape}.")

        def step(carry, eps_t):
            h_dec, dec_state = self._net(self.decoder, eps_t, carry["dec"])
            write, raw_write = self._write(h_dec)
            return dict(dec=dec_state, canvas=carry["canvas"] + write, raw_write=raw_write)

        initial = dict(
            dec=self._initial_state("decoder", num_samples),
            canvas=tf.tile(self.canvas_bias[None], [num_samples, 1, 1]),
            raw_write=tf.zeros([num_samples, 5]),
        )
        out = self._scan(step, eps, initial)
        return Generation(
            canvas_logits=out["canvas"],
            write_windows=self._windows(out["raw_write"], self.write_size),
        )
