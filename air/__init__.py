"""Attend, Infer, Repeat (Eslami et al. 2016) on multi-MNIST.

- `air.num_steps`: `NumStepsDistribution`, the distribution over the number of
  steps `n` induced by the chain of presence variables (table, sampling, mean,
  entropy, registered analytic KL), and `truncated_geometric_prior`.
- `air.modules`: the Sonnet modules (input encoder, where/presence heads,
  glimpse encoder/decoder, neural baseline) with the anti-collapse
  initializations documented where they act.
- `air.model`: `AIR`, returning an `AIROutput` (canvas, per-step windows and
  codes, presence probabilities, sampled `n`, analytic KL terms,
  log-likelihood, Monte-Carlo log weight); the prior over `n`.
- `air.estimators`: score-function estimators as pure functions of learning
  signals: REINFORCE with a learned baseline, NVIL centring/normalization
  (Mnih & Gregor 2014), VIMCO (Mnih & Rezende 2016).
- `air.experiment`: the training task, count accuracy and confusion matrix,
  bounds, gradient variance; configs in `air/configs/air.py`.
- Binaries: `python -m air.train`, `python -m air.evaluate`.

The spatial transformer used for glimpses lives in `common.attention` and the
multi-MNIST data in `air.data` (`load_multi_mnist`).
"""

from air.estimators import (
    NVILNormalizer,
    baseline_loss,
    iwae_bound,
    leave_one_out_bounds,
    nvil_moments,
    nvil_normalize,
    score_function_surrogate,
    vimco_loss,
    vimco_signals,
)
from air.model import AIR, AIROutput, kl_num_steps, num_steps_prior_log_probs
from air.modules import (
    Baseline,
    GlimpseDecoder,
    GlimpseEncoder,
    InputEncoder,
    PresenceHead,
    WhereHead,
)
from air.num_steps import NumStepsDistribution, truncated_geometric_prior

__all__ = [
    "AIR",
    "AIROutput",
    "Baseline",
    "GlimpseDecoder",
    "GlimpseEncoder",
    "InputEncoder",
    "NVILNormalizer",
    "NumStepsDistribution",
    "PresenceHead",
    "WhereHead",
    "baseline_loss",
    "iwae_bound",
    "kl_num_steps",
    "leave_one_out_bounds",
    "num_steps_prior_log_probs",
    "nvil_moments",
    "nvil_normalize",
    "score_function_surrogate",
    "truncated_geometric_prior",
    "vimco_loss",
    "vimco_signals",
]
