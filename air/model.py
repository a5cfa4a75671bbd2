"""The Attend, Infer, Repeat model (Eslami et al. 2016).

AIR explains an image `x` with a variable number `n <= N` of objects. At step
`t = 1..N` an LSTM reads the embedded image and the previous step's codes,

    h_t = LSTM([enc(x), z_what_{t-1}, z_where_{t-1}], h_{t-1}),

and parametrizes the presence probability `p_t = sigmoid(f(h_t))` and
`q(z_where_t | h_t)`; a spatial transformer crops the window `z_where_t`
(`common.attention.extract_glimpse`), the glimpse encoder gives
`q(z_what_t | crop)`, and the glimpse decoder's output is written back with
the inverse warp. The count follows `NumStepsDistribution(p_1..p_N)` (the
first `b_t = 0` ends the sequence) and the canvas is additive (paper sec. 2.1
and appendix; reference code akosiorek/attend_infer_repeat, `air_model.py`):

    canvas = sum_t z_pres_t write(decoder(z_what_t), z_where_t),
    p(x | z, n) = prod_pixels Normal(x; canvas, sigma)  (or Bernoulli(canvas)).

Priors: `z_what_t ~ N(0, I)`; the where code `u_t ~ N(0, I)` (`WhereHead`; a
tighter prior on the window size is an option);
`n ~` truncated geometric with success probability `s`
(`num_steps_prior_log_probs`; `s` is annealed or fixed by the experiment).

Because all `N` steps' codes are sampled whatever `n` is, and `p_t` depends on
`h_t` (i.e. on `z_{<t}`) but not on `z_t`, the KL part of the ELBO is

    E_q[log q(n, z) / p(n, z)] = E_z[ KL(q(n | z) || p(n))
                                      + sum_t P(n >= t | z) (KL_what_t + KL_where_t) ],

with every KL analytic and `P(n >= t | z) = prod_{i<=t} p_i` (the reference code's `air_model.py`:
KAIR's analytic weighting, exact here). Only the reconstruction term needs
`n`'s score function (`air.estimators`). The Monte-Carlo log weight
`log p(x, z, n) - log q(z, n | x)` (unused steps cancel) feeds
importance-weighted bounds.

Symbols: B batch, N max steps, D size of `z_what`, H/W canvas height/width,
h/w glimpse height/width, C channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import sonnet as snt
import tensorflow as tf
import tensorflow_probability as tfp

from air import modules
from air.num_steps import NumStepsDistribution, truncated_geometric_prior
from common import attention, precision

tfd = tfp.distributions

LIKELIHOODS = ("gaussian", "bernoulli")
# The prior's success probability is clipped to this range (KAIR: [1e-7, 1 - 1e-15]); at both
# ends every log-probability stays finite in float64.
PRIOR_STEP_PROB_RANGE = (1e-7, 1.0 - 1e-15)
# Bernoulli likelihood: canvas intensities are clipped to [eps, 1 - eps] (the additive canvas
# can exceed 1 where windows overlap).
BERNOULLI_EPS = 1e-4


class AIROutput(NamedTuple):
    """What `AIR.__call__` returns (all float32 unless noted).

    Attributes:
      canvas: `[B, H, W, C]` the mean of `p(x | z, n)` for the sampled `n`.
      writes: `[B, N, H, W, C]` each step's decoded glimpse written to the
        canvas, before masking by `z_pres`.
      crops: `[B, N, h, w, C]` the input windows the glimpse encoder read.
      z_where: `[B, N, 4]` windows `(s_x, s_y, t_x, t_y)` (`common.attention`).
      z_what: `[B, N, D]` appearance codes.
      step_logits: `[B, N]` logits of the per-step presence probabilities `p_t`.
      presence_probs: `[B, N]` `P(n >= t | x, z)`, the KL weights.
      z_pres: `[B, N]` `1[t <= n]` for the sampled `n`.
      num_steps: int32 `[B]` sampled `n` (the mode of `q(n | x, z)` when deterministic).
      log_q_num_steps: `[B]` `log q(n | x, z)`, differentiable (score function).
      log_likelihood: `[B]` `log p(x | z, n)`, summed over pixels.
      kl_num_steps: `[B]` `KL(q(n | x, z) || p(n))`.
      kl_what: `[B, N]` `KL(q(z_what_t) || N(0, I))` per step, unweighted.
      kl_where: `[B, N]` the same for the where code.
      kl_z: `[B]` `sum_t P(n >= t) (kl_what_t + kl_where_t)`.
      log_weight: `[B]` Monte-Carlo `log p(x, z, n) - log q(z, n | x)`.
    """

    canvas: tf.Tensor
    writes: tf.Tensor
    crops: tf.Tensor
    z_where: tf.Tensor
    z_what: tf.Tensor
    step_logits: tf.Tensor
    presence_probs: tf.Tensor
    z_pres: tf.Tensor
    num_steps: tf.Tensor
    log_q_num_steps: tf.Tensor
    log_likelihood: tf.Tensor
    kl_num_steps: tf.Tensor
    kl_what: tf.Tensor
    kl_where: tf.Tensor
    kl_z: tf.Tensor
    log_weight: tf.Tensor

    @property
    def elbo(self) -> tf.Tensor:
        """`[B]` the ELBO with analytic KL terms: `log p(x | z, n) - KL_n - KL_z`."""
        return self.log_likelihood - self.kl_num_steps - self.kl_z


def num_steps_prior_log_probs(step_prob, num_steps: int, normalized: bool = True) -> tf.Tensor:
    """`log p(n)` for `n = 0..N` of the truncated geometric prior, float64 `[..., N + 1]`.

    `normalized=True`: `p(k) = s^k (1 - s)` for `k < N` and `p(N) = s^N`
    (`air.truncated_geometric_prior`). `normalized=False`: KAIR's unnormalized
    `(1 - s) s^k` for every `k <= N` (the reference code's `prior.py`): with `s ~ 1` it is
    flat at `1 - s`, so its "KL" is `-H(q) - log(1 - s)` and rewards entropy,
    whereas the normalized prior at `s ~ 1` puts its mass on `n = N`.
    `s` is clipped to `PRIOR_STEP_PROB_RANGE`; each extra step costs
    `-log s` nats (16.1 at `s = 1e-7`, 4.6 at `s = 0.01`).

    Args:
      step_prob: success probability `s`, scalar or `[...]`.
      num_steps: N.
      normalized: see above.
    """
    s = tf.clip_by_value(tf.cast(step_prob, tf.float64), *PRIOR_STEP_PROB_RANGE)
    if normalized:
        return truncated_geometric_prior(s, num_steps).log_probs_table()
    k = tf.range(num_steps + 1, dtype=tf.float64)
    return tf.math.log1p(-s)[..., None] + k * tf.math.log(s)[..., None]


def kl_num_steps(q: NumStepsDistribution, prior_log_probs: tf.Tensor) -> tf.Tensor:
    """`sum_n q(n) (log q(n) - log p(n))`, analytic, float64 `[...]`.

    Terms with `q(n) = 0` are zero with zero gradients (no `0 * log 0` NaN).

    Args:
      q: the posterior over `n`, batch `[...]`.
      prior_log_probs: `[..., N + 1]` (broadcastable) `log p(n)`, possibly
        unnormalized.
    """
    log_q = tf.cast(q.log_probs_table(), tf.float64)
    prior_log_probs = tf.cast(prior_log_probs, tf.float64)
    positive = log_q > -np.inf
    diff = tf.where(positive, log_q - prior_log_probs, tf.zeros_like(log_q))
    return tf.reduce_sum(tf.exp(log_q) * diff, axis=-1)


class AIR(snt.Module):
    """Attend, Infer, Repeat (Eslami et al. 2016, sec. 2 and App. A); see the module docstring.

    Example:

    ```python
    model = air.experiment.build_model(config).air
    out = model(images, seed=tf.constant([0, 1]), prior_step_prob=0.01)  # images [B, 50, 50, 1]
    loss = -out.elbo  # plus a score-function surrogate for n: air.estimators
    ```
    """

    def __init__(
        self,
        input_encoder: modules.InputEncoder,
        core: snt.RNNCore,
        where_head: modules.WhereHead,
        presence_head: modules.PresenceHead,
        glimpse_encoder: modules.GlimpseEncoder,
        glimpse_decoder: modules.GlimpseDecoder,
        canvas_shape: Sequence[int] = (50, 50),
        max_steps: int = 3,
        likelihood: str = "gaussian",
        output_std: float = 0.3,
        normalized_prior: bool = True,
        where_prior_loc: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
        where_prior_std: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        name: str | None = None,
    ):
        """Args:
          input_encoder, core, where_head, presence_head, glimpse_encoder,
            glimpse_decoder: the sub-modules (`air.modules`; `core` is an
            LSTM, e.g. `snt.LSTM(256)`, whose initial state is learned here).
          canvas_shape: `(H, W)`.
          max_steps: N (3 in the paper's multi-MNIST experiment).
          likelihood: 'gaussian' (std `output_std`, summed over pixels; KAIR)
            or 'bernoulli'.
          output_std: sigma of the Gaussian likelihood (KAIR 0.3).
          normalized_prior: see `num_steps_prior_log_probs`.
          where_prior_loc, where_prior_std: the diagonal Gaussian prior on the
            where code `u = (u_sx, u_sy, u_tx, u_ty)` (KAIR: N(0, 1)), or
            `(u_s, u_tx, u_ty)` with a one-scale where head (paper). A
            tight prior on the scale codes around the object size is PYRO's
            "scale prior sd 0.2" (Pyro AIR tutorial).

        Raises:
          ValueError: for bad hyperparameters.
        """
        super().__init__(name=name)
        if max_steps < 1:
            raise ValueError(f"`max_steps` must be >= 1; got {max_steps}.")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"`likelihood` must be one of {LIKELIHOODS}; got {likelihood!r}.")
        if output_std <= 0:
            raise ValueError(f"`output_std` must be > 0; got {output_std}.")
        self.canvas_shape = tuple(int(d) for d in canvas_shape)
        if len(self.canvas_shape) != 2 or min(self.canvas_shape) < 1:
            raise ValueError(f"`canvas_shape` must be (H, W); got {canvas_shape}.")
        self.max_steps = int(max_steps)
        self.likelihood = likelihood
        self.output_std = float(output_std)
        self.normalized_prior = bool(normalized_prior)
        self.where_prior_loc = [float(v) for v in where_prior_loc]
        self.where_prior_std = [float(v) for v in where_prior_std]
        code_size = getattr(where_head, "code_size", 4)
        if len(self.where_prior_loc) != code_size or len(self.where_prior_std) != code_size:
            raise ValueError(
                f"`where_prior_loc` and `where_prior_std` need {code_size} values each (one per "
                "where code of the where head)."
            )
        if min(self.where_prior_std) <= 0:
            raise ValueError(f"`where_prior_std` must be > 0; got {where_prior_std}.")
        self.glimpse_shape = glimpse_decoder.glimpse_shape
        self.channels = glimpse_decoder.channels
        self._input_encoder = input_encoder
        self._core = core
        self._where_head = where_head
        self._presence_head = presence_head
        self._glimpse_encoder = glimpse_encoder
        self._glimpse_decoder = glimpse_decoder
        self.what_size = glimpse_encoder.what_size
        # Trainable initial LSTM state (KAIR), one row broadcast over the batch.
        self._initial_state = tf.nest.map_structure(
            lambda s: tf.Variable(tf.zeros_like(s), name="initial_state"),
            core.initial_state(1),
        )

    def _likelihood(self, images: tf.Tensor, canvas: tf.Tensor) -> tf.Tensor:
        if self.likelihood == "gaussian":
            log_p = tfd.Normal(canvas, self.output_std).log_prob(images)
        else:
            probs = tf.clip_by_value(canvas, BERNOULLI_EPS, 1.0 - BERNOULLI_EPS)
            # Cross-entropy form, so grey-level targets in [0, 1] are allowed.
            log_p = images * tf.math.log(probs) + (1.0 - images) * tf.math.log1p(-probs)
        return tf.reduce_sum(log_p, axis=[1, 2, 3])

    def __call__(
        self,
        images: tf.Tensor,
        seed: tf.Tensor,
        prior_step_prob,
        deterministic: bool = False,
    ) -> AIROutput:
        """Infers and reconstructs `images`.

        Args:
          images: `[B, H, W, C]` in [0, 1].
          seed: `[2]` int stateless seed; equal seeds give equal outputs.
          prior_step_prob: the prior's success probability `s` (scalar, any
            float dtype; float64 keeps `1 - 1e-15` distinct from 1).
          deterministic: use posterior means for the codes and the mode of
            `q(n | x, z)` instead of samples.

        Returns:
          `AIROutput`.
        """
        images = tf.convert_to_tensor(images, tf.float32)
        batch = tf.shape(images)[0]
        num = self.max_steps
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int32), 2 * num + 1)
        embedding = self._input_encoder(images)
        state = tf.nest.map_structure(lambda v: tf.tile(v, [batch, 1]), self._initial_state)
        prev_what = tf.zeros([batch, self.what_size])
        prev_where = tf.zeros([batch, 4])
        what_prior = tfd.Independent(tfd.Normal(tf.zeros([self.what_size]), 1.0), 1)
        where_prior = tfd.Independent(
            tfd.Normal(tf.constant(self.where_prior_loc), tf.constant(self.where_prior_std)), 1
        )
        steps = {k: [] for k in ("logit", "where", "what", "crop", "write", "kl_what", "kl_where")}
        log_ratio = []  # per step log p(z_t) - log q(z_t), [B]
        for t in range(num):
            hidden, state = precision.run(
                self._core, tf.concat([embedding, prev_what, prev_where], -1), state
            )
            steps["logit"].append(self._presence_head(hidden))
            where_q = self._where_head(hidden)
            u = where_q.mean() if deterministic else where_q.sample(seed=seeds[2 * t])
            z_where = self._where_head.squash(u)
            crop = attention.extract_glimpse(images, z_where, self.glimpse_shape)
            what_q = self._glimpse_encoder(crop)
            z_what = what_q.mean() if deterministic else what_q.sample(seed=seeds[2 * t + 1])
            write = attention.write_glimpse(
                self._glimpse_decoder(z_what), z_where, self.canvas_shape
            )
            steps["where"].append(z_where)
            steps["what"].append(z_what)
            steps["crop"].append(crop)
            steps["write"].append(write)
            steps["kl_what"].append(tfd.kl_divergence(what_q, what_prior))
            steps["kl_where"].append(tfd.kl_divergence(where_q, where_prior))
            log_ratio.append(
                what_prior.log_prob(z_what)
                - what_q.log_prob(z_what)
                + where_prior.log_prob(u)
                - where_q.log_prob(u)
            )
            prev_what, prev_where = z_what, z_where

        stack = lambda key: tf.stack(steps[key], axis=1)
        step_logits = stack("logit")  # [B, N]
        q_n = NumStepsDistribution(step_logits=tf.cast(step_logits, tf.float64))
        n = q_n.mode() if deterministic else q_n.sample(seed=seeds[-1])  # [B] int32
        z_pres = tf.cast(tf.range(num)[None, :] < n[:, None], tf.float32)  # [B, N]
        writes = stack("write")  # [B, N, H, W, C]
        canvas = tf.reduce_sum(z_pres[:, :, None, None, None] * writes, axis=1)
        log_likelihood = self._likelihood(images, canvas)

        prior_log_probs = num_steps_prior_log_probs(prior_step_prob, num, self.normalized_prior)
        presence_probs = tf.cast(q_n.presence_probs(), tf.float32)
        kl_what, kl_where = stack("kl_what"), stack("kl_where")
        kl_z = tf.reduce_sum(presence_probs * (kl_what + kl_where), axis=1)
        log_q_n = q_n.log_prob(n)  # float64
        if prior_log_probs.shape.rank == 1:  # one s for the batch
            log_p_n = tf.gather(prior_log_probs, n)
        else:  # one s per example, [B, N + 1]
            log_p_n = tf.gather(prior_log_probs, n, axis=-1, batch_dims=1)
        log_weight = (
            log_likelihood
            + tf.cast(log_p_n - log_q_n, tf.float32)
            + tf.reduce_sum(z_pres * tf.stack(log_ratio, axis=1), axis=1)
        )
        return AIROutput(
            canvas=canvas,
            writes=writes,
            crops=stack("crop"),
            z_where=stack("where"),
            z_what=stack("what"),
            step_logits=step_logits,
            presence_probs=presence_probs,
            z_pres=z_pres,
            num_steps=n,
            log_q_num_steps=tf.cast(log_q_n, tf.float32),
            log_likelihood=log_likelihood,
            kl_num_steps=tf.cast(kl_num_steps(q_n, prior_log_probs), tf.float32),
            kl_what=kl_what,
            kl_where=kl_where,
            kl_z=kl_z,
            log_weight=log_weight,
        )
