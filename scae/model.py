"""The Stacked Capsule Autoencoder (Kosiorek et al. 2019, sec. 2): a PCAE explains the image with
part templates, an OCAE explains the parts with objects, and sparsity losses make the object
presences cluster by class.

The model receives its sub-modules (built in `scae.experiment.build_model` from a config) and
computes, for a batch of images, every quantity and loss term of paper sec. 2 and 2.3:

    loss = -rec_ll - w_caps * log p(parts) + w_dyn * L2(dynamic OP)
           + w_pw * prior_within + w_pb * prior_between
           + w_qw * posterior_within - w_qb * posterior_between
           + cross-entropy of the two linear probes (on stop-gradient presences: LIN-PRED).

The OCAE reads the parts through `stop_gradient` (the reference code's choice: the part model is
trained only by the image likelihood), each part as `[pose (6 affine numbers), 1 - d_m, special
features, flattened template]`.

Symbols: B batch, M parts, K objects, C classes, H/W image size.
"""

from __future__ import annotations

from typing import NamedTuple

import ml_collections
import sonnet as snt
import tensorflow as tf

from common import precision
from scae import geometry, objects, parts
from scae.set_transformer import SetTransformer


class SCAEOutput(NamedTuple):
    """Everything `SCAE.__call__` computes (per example where the shape says so).

    Attributes:
      parts: the `parts.PartCapsules`.
      rendered: the transformed templates (`parts.Rendered`).
      objects: the `objects.ObjectCapsules`.
      part_likelihood: `objects.PartLikelihood` (log_prob `[B]`, posterior `[B, M, K]`, prior
        and posterior presences `[B, K]`).
      rec_ll: `[B]` image log-likelihood (nats).
      sparsity: `objects.Sparsity` (scalars).
      dynamic_l2: scalar, `0.5 sum(dynamic OP^2) / B`.
      probe_logits: `{"prior": [B, C], "posterior": [B, C]}`.
    """

    parts: parts.PartCapsules
    rendered: parts.Rendered
    objects: objects.ObjectCapsules
    part_likelihood: objects.PartLikelihood
    rec_ll: tf.Tensor
    sparsity: objects.Sparsity
    dynamic_l2: tf.Tensor
    probe_logits: dict


class SCAE(snt.Module):
    """PCAE + OCAE (module docstring).

    Args:
      part_encoder, template_decoder: the PCAE (`scae.parts`).
      set_transformer, capsule_decoder: the OCAE (`scae.set_transformer`, `scae.objects`).
      image_shape: `(H, W)` of the canvas.
      num_classes: C, for the sparsity targets K / C and B / C and the probes.
      normalize_part_mixture: the paper's normalized part mixture (True) or the reference
        code's unnormalized one.
    """

    def __init__(
        self,
        part_encoder: parts.PartEncoder,
        template_decoder: parts.TemplateDecoder,
        set_transformer: SetTransformer,
        capsule_decoder: objects.CapsuleDecoder,
        image_shape: tuple[int, int],
        num_classes: int = 10,
        normalize_part_mixture: bool = False,
        name: str | None = None,
    ):
        super().__init__(name=name)
        self.part_encoder = part_encoder
        self.template_decoder = template_decoder
        self.set_transformer = set_transformer
        self.capsule_decoder = capsule_decoder
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.normalize_part_mixture = normalize_part_mixture
        self.prior_probe = snt.Linear(num_classes, name="prior_probe")
        self.posterior_probe = snt.Linear(num_classes, name="posterior_probe")

    def _ocae_input(self, caps: parts.PartCapsules, part_poses: tf.Tensor) -> tf.Tensor:
        templates = self.template_decoder.part_templates(caps.features)  # [(B,) M, t, t, C]
        batch, m = tf.shape(part_poses)[0], self.template_decoder.num_parts
        tiled = tf.broadcast_to(
            tf.reshape(templates, [-1, m, tf.reduce_prod(tf.shape(templates)[-3:])]),
            tf.stack([batch, m, tf.reduce_prod(tf.shape(templates)[-3:])]),
        )  # [B, M, t*t*C]
        x = tf.concat(
            [part_poses, 1.0 - caps.presence[..., tf.newaxis], caps.features, tiled], axis=-1
        )
        return tf.stop_gradient(x)

    def __call__(
        self,
        images: tf.Tensor,
        noise_seed: tf.Tensor | None = None,
        targets: tf.Tensor | None = None,
    ) -> SCAEOutput:
        """Args:
        images: `[B, H, W, C]` in [0, 1], what the part encoder reads.
        noise_seed: stateless seed of the presence noise (training); None: no noise.
        targets: `[B, H, W, C]` what the templates explain (SVHN / CIFAR-10: the Sobel edges of
          `images`, paper sec. 4); None: `images` themselves.
        """
        seeds = (
            tf.random.experimental.stateless_split(noise_seed, 2)
            if noise_seed is not None
            else (None, None)
        )
        caps = self.part_encoder(images, seeds[0])
        affine = geometry.raw_to_affine(caps.pose_raw)  # [B, M, 2, 3]
        rendered = self.template_decoder.render(affine, self.image_shape, caps.features)
        rec_ll = self.template_decoder.log_likelihood(
            images if targets is None else targets, rendered, caps.presence_logit
        )

        part_poses = objects.flatten_pose(affine)  # [B, M, 6]
        presence = tf.stop_gradient(caps.presence)
        features = precision.run(
            self.set_transformer, self._ocae_input(caps, part_poses), presence
        )  # mixed precision: the Set Transformer
        objs = self.capsule_decoder(features, seeds[1])
        likelihood = objects.part_log_likelihood(
            tf.stop_gradient(part_poses),
            presence,
            objs.votes(),
            objs.vote_presence(),
            objs.vote_scale,
            normalize=self.normalize_part_mixture,
        )
        batch = tf.cast(tf.shape(images)[0], images.dtype)
        return SCAEOutput(
            parts=caps,
            rendered=rendered,
            objects=objs,
            part_likelihood=likelihood,
            rec_ll=rec_ll,
            sparsity=objects.sparsity_losses(
                likelihood.prior_presence, likelihood.posterior_mass, self.num_classes
            ),
            dynamic_l2=0.5 * tf.reduce_sum(tf.square(objs.op_dynamic)) / batch,
            probe_logits={
                "prior": self.prior_probe(tf.stop_gradient(likelihood.prior_presence)),
                "posterior": self.posterior_probe(tf.stop_gradient(likelihood.posterior_mass)),
            },
        )

    def object_reconstructions(self, out: SCAEOutput) -> tf.Tensor:
        """`[B, K, H, W, C]`: what each object capsule draws (the reference code's per-capsule
        top-down reconstruction): every template m placed at capsule k's vote `OV_k OP_{k,m}`
        and mixed (`TemplateDecoder.reconstruction`, with the background) with presence
        `a_k a_{k,m} d_m`, the object's and the vote's presence times the part's."""
        votes = out.objects.votes()  # [B, K, M, 6]
        shape = tf.shape(votes)
        m = self.template_decoder.num_parts
        affine = tf.reshape(votes, [-1, m, 2, 3])  # [B*K, M, 2, 3]
        features = tf.repeat(out.parts.features, tf.shape(votes)[1], axis=0)  # [B*K, M, F]
        rendered = self.template_decoder.render(affine, self.image_shape, features)
        presence = out.objects.vote_presence() * out.parts.presence[:, tf.newaxis]
        p = tf.clip_by_value(tf.reshape(presence, [-1, m]), 1e-6, 1.0 - 1e-6)
        recon = self.template_decoder.reconstruction(rendered, tf.math.log(p) - tf.math.log1p(-p))
        h, w = self.image_shape
        return tf.reshape(recon, tf.concat([shape[:2], [h, w, tf.shape(recon)[-1]]], 0))


def loss_terms(
    out: SCAEOutput, labels: tf.Tensor | None, weights: ml_collections.ConfigDict
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """`(loss [B], metrics {name: [B]})` of paper sec. 2.3 (module docstring); batch-level terms
    are broadcast to every example, so the batch mean of `loss` is the paper's loss.

    `weights` fields: `part_likelihood`, `dynamic_l2`, `prior_within`, `prior_between`,
    `posterior_within`, `posterior_between`.
    """
    ones = tf.ones_like(out.rec_ll)
    s = out.sparsity
    batch_terms = (
        weights.dynamic_l2 * out.dynamic_l2
        + weights.prior_within * s.prior_within
        + weights.prior_between * s.prior_between
        + weights.posterior_within * s.posterior_within
        - weights.posterior_between * s.posterior_between
    )
    loss = -out.rec_ll - weights.part_likelihood * out.part_likelihood.log_prob + batch_terms
    metrics = {
        "rec_ll": out.rec_ll,
        "part_log_prob": out.part_likelihood.log_prob,
        "dynamic_l2": out.dynamic_l2 * ones,
        "prior_within_sparsity": s.prior_within * ones,
        "prior_between_sparsity": s.prior_between * ones,
        "posterior_within_sparsity": s.posterior_within * ones,
        "posterior_between_sparsity": s.posterior_between * ones,
        "part_presence": tf.reduce_sum(out.parts.presence, -1),
        "object_presence": tf.reduce_sum(out.part_likelihood.prior_presence, -1),
    }
    if labels is not None:
        for name, logits in out.probe_logits.items():
            xent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
            loss += xent
            metrics[f"{name}_probe_xent"] = xent
            correct = tf.equal(tf.argmax(logits, -1, output_type=labels.dtype), labels)
            metrics[f"{name}_probe_accuracy"] = tf.cast(correct, out.rec_ll.dtype)
    return loss, metrics
