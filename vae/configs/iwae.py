"""Configs for `vae.train`: VAE / IWAE / MIWAE / CIWAE / PIWAE on MNIST.

Select a variant after the colon and override any field on the command line:

  python -m vae.train --config=vae/configs/iwae.py:cpu --config.objective.num_samples=50

Variants:
  paper:   Burda et al. (2016) sec. 5: batch 20, Adam 1e-3 * 10^(-i/7) for 3^i
           epochs (i = 0..7, 3280 epochs), dynamic binarization, IWAE k = 50.
  cpu:     IWAE k = 5, one stochastic layer, batch 100, 168 epochs: at most 30
           minutes on 2 CPU cores.
  default: a few minutes on a laptop CPU (the README's first command).
  smoke:   seconds, for tests.
"""

import ml_collections
from ml_collections import config_dict

from common import training

MNIST_TRAIN_SIZE = 60_000


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
    """Returns the config of `variant` (see module docstring).

    Raises:
      ValueError: for an unknown variant.
    """
    c = training.experiment_config("vae.experiment", variant)

    c.data = ml_collections.ConfigDict()
    c.data.dataset = "mnist"
    c.data.data_dir = ""  # empty: $GENMODELS_DATA_DIR or ~/.cache/genmodels
    c.data.source = "auto"  # auto | tfds | idx | npm
    c.data.validation_size = 400  # Burda et al.: 59,600 train / 400 held out
    c.data.binarization = "dynamic"  # dynamic (Burda et al.) | static
    c.data.binarization_seed = 123  # static draws and the evaluation binarization (YB)

    c.model = ml_collections.ConfigDict()
    c.model.num_stochastic_layers = 1  # 1: 784-200-200-50; 2: + 100-100-100-50 (Burda sec. 5)
    # q(z_1|x): gaussian (Burda) | planar | radial (Rezende & Mohamed 2015, parameters
    # emitted by the encoder, sec. 4) | iaf (Kingma et al. 2016, MADEs conditioned on
    # an encoder context). With 2 stochastic layers the flow acts on z_1 only.
    c.model.posterior = "gaussian"
    c.model.num_flows = 0  # K flow layers; 0: 10 for planar/radial, 2 for iaf; gaussian: 0
    c.model.iaf_hidden_units = (200, 200)  # iaf only: hidden sizes of each MADE
    c.model.context_size = 50  # iaf only: size of the context h emitted by the encoder
    c.model.iaf_log_scale_bound = config_dict.placeholder(float)  # iaf only: soft clip

    c.objective = ml_collections.ConfigDict()
    c.objective.estimator = "iwae"  # elbo | iwae | miwae | ciwae | piwae
    c.objective.num_samples = 5  # K importance samples per group
    c.objective.num_groups = 1  # M (miwae, piwae); total samples M*K
    c.objective.beta = config_dict.placeholder(float)  # CIWAE beta, ciwae only

    c.batch_size = 100
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 1e-3
    # paper: 1e-3 * 10^(-i/7) for 3^i epochs, i = 0..7 (Burda sec. 5);
    # cosine: cosine decay to learning_rate * final_fraction over loop.num_steps;
    # constant.
    c.optimizer.schedule = "cosine"
    c.optimizer.final_fraction = 0.1
    c.optimizer.beta_1 = 0.9  # the paper's text (the IWAE code, yburda/iwae, uses 0.99)
    c.optimizer.beta_2 = 0.999
    c.optimizer.epsilon = 1e-4  # Burda sec. 5 (and the IWAE code)

    c.loop = training.loop_config()

    c.eval = ml_collections.ConfigDict()
    c.eval.num_samples = 5000  # k for the test log-likelihood (Burda sec. 5)
    c.eval.batch_size = 10  # images per chunk; each holds chunk_samples x batch decoder passes
    c.eval.chunk_samples = 1000
    c.eval.validation_num_samples = 100  # IWAE-k on the validation split during training
    c.eval.active_units_threshold = 1e-2  # Burda sec. 5.2
    c.eval.after_training = True  # vae.train evaluates the test split when done
    c.eval.num_test_images = 0  # 0: all 10,000; smoke evaluates a prefix

    steps_per_epoch = lambda batch: (MNIST_TRAIN_SIZE - c.data.validation_size) // batch
    if variant == "paper":
        c.batch_size = 20
        c.objective.num_samples = 50
        c.optimizer.schedule = "paper"
        c.loop.num_steps = 3280 * steps_per_epoch(20)  # sum_i 3^i epochs = 9,774,400 steps
        c.loop.log_every = 10_000
        c.loop.summary_every = 1_000
        c.loop.image_every = 100_000
        c.loop.eval_every = 100_000
        c.loop.checkpoint_every = 50_000
    elif variant == "cpu":
        c.batch_size = 100
        c.loop.num_steps = 100_000  # 168 epochs
        c.loop.log_every = 1_000
        c.loop.summary_every = 500
        c.loop.image_every = 10_000
        c.loop.eval_every = 10_000
        c.loop.checkpoint_every = 5_000
    elif variant == "default":
        c.batch_size = 100
        c.loop.num_steps = 6_000  # 10 epochs
        c.loop.log_every = 500
        c.loop.summary_every = 100
        c.loop.image_every = 2_000
        c.loop.eval_every = 2_000
        c.loop.checkpoint_every = 2_000
        c.eval.num_samples = 1000
    elif variant == "smoke":
        c.batch_size = 20
        c.data.validation_size = 100
        c.loop.num_steps = 20
        c.loop.log_every = 5
        c.loop.summary_every = 5
        c.loop.image_every = 10
        c.loop.eval_every = 10
        c.loop.checkpoint_every = 10
        c.eval.num_samples = 20
        c.eval.batch_size = 50
        c.eval.chunk_samples = 20
        c.eval.validation_num_samples = 5
        c.eval.num_test_images = 100
    else:
        raise ValueError(f"Unknown variant {variant!r}; expected paper, cpu, default or smoke.")
    return c
