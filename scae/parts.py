"""The Part Capsule Autoencoder (PCAE) of Stacked Capsule Autoencoders (Kosiorek et al. 2019,
sec. 2.1): an encoder that reads M part capsules from an image, and a decoder that explains the
image with M learned templates placed by the parts' poses.

Encoder (`PartEncoder`; paper sec. 2.1 and the reference code's `capsules/primary.py`): a CNN
(4 conv layers, 128 channels, 3x3, strides 2, 2, 1, 1, ReLU) and a 1x1 convolution to, per part,
6 pose numbers, 1 presence logit, F special features and 1 attention logit per position;
attention-based pooling (a softmax over positions of each part's attention logits, then the
weighted sum of its maps) gives each part's parameters.

Decoder (`TemplateDecoder`; paper eq. 4): template m, transformed by part m's pose, is `T_m`;
each pixel of the image is a mixture over the M transformed templates (and a background
component of constant intensity), with mixing probabilities proportional to
`d_m * exp(alpha_m)`, `d_m` the presence probability and `alpha_m` the transformed per-template
alpha logit map, normalized over the components at every pixel:

    log p(y) = sum_pixels log sum_m pi_m(pixel) N(y(pixel) | T_m(pixel), sigma^2).

Symbols: B batch, M parts, F special features, H/W image height/width, t template size, C
channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import sonnet as snt
import tensorflow as tf

from common import attention, precision
from scae import geometry

POSE_SIZE = 6
PRESENCE_NOISE = 4.0  # training presence logits get U(-2, 2) noise (reference code)


class PartCapsules(NamedTuple):
    """What `PartEncoder` reads from a batch of images.

    Attributes:
      pose_raw: `[B, M, 6]` raw pose numbers (`scae.geometry.raw_to_affine` makes the pose).
      presence_logit: `[B, M]` presence logits, noise included when training with noise.
      features: `[B, M, F]` special features.
    """

    pose_raw: tf.Tensor
    presence_logit: tf.Tensor
    features: tf.Tensor

    @property
    def presence(self) -> tf.Tensor:
        """`[B, M]` presence probabilities `d_m`."""
        return tf.sigmoid(self.presence_logit)


def attention_pool(values: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Attention-based pooling (paper sec. 2.1): per part, the softmax over all positions of its
    attention logits weights its value maps.

    Args:
      values: `[B, h, w, M, D]` per-position part parameters.
      logits: `[B, h, w, M]` attention logits.

    Returns:
      `[B, M, D]`; the weights of each part sum to one over the `h * w` positions.
    """
    shape = tf.shape(values)
    by_part = tf.transpose(logits, [0, 3, 1, 2])  # [B, M, h, w]
    weights = tf.nn.softmax(tf.reshape(by_part, [shape[0], shape[3], -1]), axis=-1)  # [B, M, hw]
    flat = tf.reshape(values, [shape[0], shape[1] * shape[2], shape[3], shape[4]])  # [B, hw, M, D]
    return tf.einsum("bmp,bpmd->bmd", weights, flat)


class PartEncoder(snt.Module):
    """Image -> M part capsules (module docstring).

    Presence noise: when `__call__` gets `noise_seed`, the presence logits get
    `U(-noise_scale / 2, noise_scale / 2)` noise (the reference code adds it always, also when
    evaluating; here the caller decides).
    """

    def __init__(
        self,
        num_parts: int,
        num_features: int = 16,
        channels: Sequence[int] = (128, 128, 128, 128),
        strides: Sequence[int] = (2, 2, 1, 1),
        noise_scale: float = PRESENCE_NOISE,
        name: str | None = None,
    ):
        """Raises:
        ValueError: `num_parts` < 1, `num_features` < 0, or channels and strides of different
          lengths.
        """
        super().__init__(name=name)
        if num_parts < 1 or num_features < 0:
            raise ValueError(
                f"num_parts must be >= 1 and num_features >= 0; got {num_parts}, {num_features}."
            )
        if len(channels) != len(strides):
            raise ValueError(f"channels {channels} and strides {strides} differ in length.")
        self.num_parts, self.num_features, self.noise_scale = num_parts, num_features, noise_scale
        self._convs = [
            snt.Conv2D(c, 3, stride=s, padding="VALID", name=f"conv_{i}")
            for i, (c, s) in enumerate(zip(channels, strides, strict=True))
        ]
        self._param_size = POSE_SIZE + 1 + num_features
        self._head = snt.Conv2D(num_parts * (self._param_size + 1), 1, name="capsule_head")

    def _cnn(self, images: tf.Tensor) -> tf.Tensor:
        h = images
        for conv in self._convs:
            h = tf.nn.relu(conv(h))
        return self._head(h)

    def __call__(self, images: tf.Tensor, noise_seed: tf.Tensor | None = None) -> PartCapsules:
        """Args:
        images: `[B, H, W, C]`.
        noise_seed: stateless seed of the presence noise; None: no noise.
        """
        # The CNN in the mixed-precision policy's dtype; pooling and noise in float32.
        out = precision.run(self._cnn, images)  # [B, h, w, M * (D + 1)]
        shape = tf.shape(out)
        m, d = self.num_parts, self._param_size
        values = tf.reshape(out[..., : m * d], [shape[0], shape[1], shape[2], m, d])
        params = attention_pool(values, out[..., m * d :])  # [B, M, D]
        pose_raw, logit, features = tf.split(params, [POSE_SIZE, 1, self.num_features], -1)
        logit = logit[..., 0]
        if noise_seed is not None and self.noise_scale:
            u = tf.random.stateless_uniform(tf.shape(logit), noise_seed, dtype=logit.dtype)
            logit += (u - 0.5) * self.noise_scale
        return PartCapsules(pose_raw, logit, features)


def _template_init(num: int, size: int, channels: int, seed: int) -> np.ndarray:
    """Orthogonal initial templates in [0, 1]: the first `num` rows of the Q factor of a random
    square matrix, min-max rescaled (the reference code's initialization), `[num, t, t, C]`.

    Raises:
      ValueError: `num > size * size * channels` (no `num` orthogonal rows exist).
    """
    n = size * size * channels
    if num > n:
        raise ValueError(f"{num} templates of {size}x{size}x{channels} cannot be orthogonal.")
    q, _ = np.linalg.qr(np.random.default_rng(seed).uniform(size=(n, n)))
    rows = q[:num]
    rows = (rows - rows.min()) / (rows.max() - rows.min())
    return rows.reshape(num, size, size, channels).astype(np.float32)


class Rendered(NamedTuple):
    """Templates placed on the canvas by `TemplateDecoder.render`.

    Attributes:
      templates: `[B, M, H, W, C]` transformed templates `T_m`.
      alpha_logits: `[B, M, H, W]` transformed alpha logit maps (0 outside a template's window,
        as the zero-padded resampler gives; the presence term then decides there).
    """

    templates: tf.Tensor
    alpha_logits: tf.Tensor


class TemplateDecoder(snt.Module):
    """M learned templates, placed by part poses, explaining the image (module docstring)."""

    def __init__(
        self,
        num_parts: int,
        template_size: int = 11,
        channels: int = 1,
        output_scale: float = 1.0,
        use_alpha: bool = True,
        background: bool = True,
        template_nonlinearity: str = "sigmoid",
        seed: int = 0,
        colorize: bool = False,
        name: str | None = None,
    ):
        """Args:
          output_scale: sigma of the per-pixel Gaussians (the reference code fixes 1).
          use_alpha: learn an alpha logit map per template (the released MNIST run); otherwise
            only the presences mix.
          background: add a component of constant, learned intensity with presence 1.
          template_nonlinearity: `sigmoid` (the released MNIST run) or `relu1`
            (`min(max(x, 0), 1)`) of the template variables.
          colorize: multiply each part's template by a colour, one value per channel in (0, 1),
            read from the part's special features by an MLP [32, C] and a sigmoid (the
            reference code's `colorize_templates`); `render` then needs the features.

        Raises:
          ValueError: bad sizes, `output_scale <= 0` or an unknown nonlinearity.
        """
        super().__init__(name=name)
        if num_parts < 1 or template_size < 2 or channels < 1 or output_scale <= 0:
            raise ValueError(
                "num_parts >= 1, template_size >= 2, channels >= 1 and output_scale > 0 needed; "
                f"got {num_parts}, {template_size}, {channels}, {output_scale}."
            )
        if template_nonlinearity not in ("sigmoid", "relu1"):
            raise ValueError(
                f"template_nonlinearity must be sigmoid or relu1, got {template_nonlinearity!r}."
            )
        self.num_parts, self.template_size, self.channels = num_parts, template_size, channels
        self.output_scale, self.use_alpha, self.background = output_scale, use_alpha, background
        self._nonlinearity = template_nonlinearity
        init = _template_init(num_parts, template_size, channels, seed)
        if template_nonlinearity == "sigmoid":  # start at the same values after the sigmoid
            init = np.log(np.clip(init, 1e-3, 1 - 1e-3) / (1 - np.clip(init, 1e-3, 1 - 1e-3)))
        self.template_variables = tf.Variable(init, name="templates")
        self.alpha_variables = tf.Variable(
            tf.zeros([num_parts, template_size, template_size, 1]), name="alpha_logits"
        )
        self.colorize = colorize
        if colorize:
            self._colour_mlp = snt.nets.MLP([32, channels], name="template_colour")
        self.background_mixing_raw = tf.Variable(0.0, name="background_mixing_raw")
        self.background_intensity_raw = tf.Variable(0.0, name="background_intensity_raw")

    @property
    def templates(self) -> tf.Tensor:
        """`[M, t, t, C]` templates in [0, 1]."""
        if self._nonlinearity == "sigmoid":
            return tf.sigmoid(self.template_variables)
        return tf.clip_by_value(self.template_variables, 0.0, 1.0)

    def colours(self, features: tf.Tensor) -> tf.Tensor:
        """`[B, M, F]` special features -> `[B, M, C]` template colours in (0, 1)."""
        return tf.sigmoid(self._colour_mlp(features))

    def part_templates(self, features: tf.Tensor | None = None) -> tf.Tensor:
        """`[M, t, t, C]` templates, or with `colorize` `[B, M, t, t, C]`: each example's
        templates coloured by its parts' `features` (`[B, M, F]`).

        Raises:
          ValueError: `colorize` without `features`.
        """
        if not self.colorize:
            return self.templates
        if features is None:
            raise ValueError("colorize=True: the templates' colours need the parts' features.")
        return self.templates * self.colours(features)[:, :, tf.newaxis, tf.newaxis, :]

    def render(
        self, affine: tf.Tensor, image_shape: Sequence[int], features: tf.Tensor | None = None
    ) -> Rendered:
        """Places the templates (`part_templates(features)`) on `image_shape` canvases.

        A pose `A = [L | t]` (`[B, M, 2, 3]`, `scae.geometry`) maps template coordinates to image
        coordinates, both normalized to [-1, 1]: the identity stretches a template over the whole
        canvas. Each canvas pixel p samples its template at `L^-1 (p - t)` (bilinear, zero
        outside, `common.attention.resample`).

        Returns:
          `Rendered` for `[B, M, H, W, ...]`.
        """
        affine = tf.convert_to_tensor(affine)
        batch = tf.shape(affine)[0]
        m = self.num_parts
        inverse = tf.linalg.inv(affine[..., :2, :2])  # [B, M, 2, 2]
        shift = -tf.linalg.matvec(inverse, affine[..., :2, 2])
        theta = tf.concat([inverse, shift[..., tf.newaxis]], axis=-1)  # image -> template
        grid = attention.affine_grid(tf.reshape(theta, [-1, 2, 3]), image_shape)  # [B*M, H, W, 2]
        templates = self.part_templates(features)
        if not self.colorize:
            templates = tf.broadcast_to(
                templates[tf.newaxis], tf.concat([[batch], tf.shape(templates)], 0)
            )
        alpha = tf.broadcast_to(
            self.alpha_variables[tf.newaxis],
            tf.concat([[batch], tf.shape(self.alpha_variables)], 0),
        )
        maps = tf.concat([templates, alpha], axis=-1)  # [B, M, t, t, C + 1]
        tiled = tf.reshape(maps, tf.concat([[batch * m], tf.shape(maps)[2:]], 0))
        out = attention.resample(tiled, grid)  # [B*M, H, W, C + 1]
        h, w = image_shape
        out = tf.reshape(out, [batch, m, h, w, self.channels + 1])
        return Rendered(templates=out[..., : self.channels], alpha_logits=out[..., self.channels])

    def mixing_log_probs(self, rendered: Rendered, presence_logit: tf.Tensor) -> tf.Tensor:
        """`[B, M (+1), H, W]` log mixing probabilities at every pixel (the background last):
        `log softmax` over components of `log d_m + alpha_m` (paper eq. 4), the background's
        logit `softplus(learned)` with presence 1."""
        logits = tf.math.log_sigmoid(presence_logit)[..., tf.newaxis, tf.newaxis]  # [B, M, 1, 1]
        logits = logits + (rendered.alpha_logits if self.use_alpha else 0.0)
        logits = tf.broadcast_to(logits, tf.shape(rendered.alpha_logits))
        if self.background:
            bg = tf.nn.softplus(self.background_mixing_raw) * tf.ones_like(logits[:, :1])
            logits = tf.concat([logits, bg], axis=1)
        return tf.nn.log_softmax(logits, axis=1)

    def component_means(self, rendered: Rendered) -> tf.Tensor:
        """`[B, M (+1), H, W, C]` means of the mixture components (the background last)."""
        if not self.background:
            return rendered.templates
        bg = tf.sigmoid(self.background_intensity_raw) * tf.ones_like(rendered.templates[:, :1])
        return tf.concat([rendered.templates, bg], axis=1)

    def log_likelihood(
        self, images: tf.Tensor, rendered: Rendered, presence_logit: tf.Tensor
    ) -> tf.Tensor:
        """`[B]` log p(image) in nats: per pixel, the mixture over components of products over
        channels of `N(y | mean, output_scale^2)`, summed over pixels (paper eq. 4).

        Args:
          images: `[B, H, W, C]` target images.
          rendered: from `render`.
          presence_logit: `[B, M]`.
        """
        means = self.component_means(rendered)  # [B, K, H, W, C]
        sigma = self.output_scale
        log_normal = -0.5 * tf.square((images[:, tf.newaxis] - means) / sigma) - np.log(
            sigma * np.sqrt(2 * np.pi)
        )
        per_component = tf.reduce_sum(log_normal, -1)  # [B, K, H, W]
        mixed = tf.reduce_logsumexp(
            self.mixing_log_probs(rendered, presence_logit) + per_component, 1
        )
        return tf.reduce_sum(mixed, axis=[1, 2])

    def reconstruction(self, rendered: Rendered, presence_logit: tf.Tensor) -> tf.Tensor:
        """`[B, H, W, C]` the mixture mean at every pixel (for pictures)."""
        probs = tf.exp(self.mixing_log_probs(rendered, presence_logit))[..., tf.newaxis]
        return tf.reduce_sum(probs * self.component_means(rendered), axis=1)


def render_poses(decoder: TemplateDecoder, parts: PartCapsules, image_shape) -> Rendered:
    """The decoder's templates placed by the parts' poses (`geometry.raw_to_affine`)."""
    return decoder.render(geometry.raw_to_affine(parts.pose_raw), image_shape, parts.features)
