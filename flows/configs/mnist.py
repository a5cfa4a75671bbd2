"""Configs for `flows.train` on MNIST: density estimation in logit space as in the MAF paper.

  python -m flows.train --config=flows/configs/mnist.py:maf5
  python -m flows.train --config=flows/configs/mnist.py:cpu \
      --config.early_stopping.patience_epochs=3
  python -m flows.evaluate --run_dir=results/flows/1

Data (Papamakarios et al. 2017, sec. 4.3, and their code, datasets/mnist.py): the first 50,000
training images train, the last 10,000 validate, the 10,000 test images test; pixels are
dequantized once (u ~ U(0, 1), seed 42) and mapped to y = logit(1e-6 + (1 - 2e-6) (k + u) / 256).

Variants:
  maf5:     MAF(5), two hidden layers of 1024 ReLU units per MADE (the MAF code trains only
            two-layer models on MNIST: run_experiments.py), MADE log-precision outputs as the MAF
            code, batch norm after each MADE, Adam 1e-4, batch 100, early stopping with patience
            30 epochs (MAF paper, appendix). XLA. Measured: after 26 epochs (stopped by
            hand) test -1299.3 nats, 1.889 bits/pixel (README).
  realnvp5: RealNVP(5) coupling layers with the same sizes and training; odd/even coordinates
            alternate and the nets' first layers start as N(0, 1)/sqrt(785), both as in the MAF
            code (`model.realnvp_mask=parity`). Measured: best at epoch 10, test -1323.7 nats
            (the paper: -1323.2).
  made:     a single Gaussian MADE (hidden [1024, 1024]), Adam 1e-3. Measured: test -1390.9 nats
            after 48 epochs; -1377.5 after 30 more at `--config.optimizer.learning_rate=1e-4`
            with `--resume` (the paper: -1380.8).
  made_mog: a single MADE MoG (hidden [1024, 1024]), 10 Gaussians per conditional, Adam 1e-3 (MAF
            paper's MADE MoG; MAF paper, sec. 4 and appendix).
  maf_mog5: MAF(5) as maf5 on a MADE MoG base of 10 components, Adam 1e-4 (MAF MoG (5)).
  cpu:      MAF(5) as maf5, at most 15 epochs with patience 5, batch-norm statistics from 10,000
            training images at the validation checks: about 22 minutes on 2 CPU cores (10.9
            training steps/s under XLA, benchmarks/flows_step.py, plus ~15 s of validation per
            epoch); about -1313 nats on validation (the maf5 run's epoch 15).
  smoke:    seconds, for tests: a tiny MAF on a 200-image prefix.
"""

import ml_collections
from ml_collections import config_dict

from common import training

MNIST_TRAIN_SIZE = 60_000
VARIANTS = ("maf5", "realnvp5", "made", "made_mog", "maf_mog5", "cpu", "smoke")


def get_config(variant: str = "maf5") -> ml_collections.ConfigDict:
    """Returns the config of `variant` (see module docstring).

    Raises:
      ValueError: for an unknown variant.
    """
    c = training.experiment_config("flows.experiment", variant, VARIANTS)
    c.task = "mnist"  # mnist | toy (flows.experiment dispatches on it)
    # early stopping needs the default strategy (see README): keep strategy "default"

    c.data = ml_collections.ConfigDict()
    c.data.dataset = "mnist"
    c.data.data_dir = ""  # empty: $GENMODELS_DATA_DIR or ~/.cache/genmodels
    c.data.source = "auto"  # auto | tfds | idx | npm
    c.data.validation_size = 10_000  # MAF: last 10,000 of train validate (50k / 10k / 10k)
    c.data.dequantization_seed = 42  # MAF code; split i draws with default_rng([42, i])
    c.data.num_train_images = 0  # 0: all 50,000; smoke trains on a prefix

    c.model = ml_collections.ConfigDict()
    c.model.flow = "maf"  # maf | realnvp | made | made_mog | maf_mog (flows.make_density)
    c.model.num_layers = 5  # MAF(5) / RealNVP(5) (MAF Table 2)
    # MAF App.: 1024 units for MNIST; the MAF code's MNIST experiments use two hidden layers.
    c.model.hidden_units = (1024, 1024)
    c.model.activation = "relu"  # relu | tanh (MAF App.: ReLU)
    c.model.hidden_degrees = "sequential"  # MADE degrees: sequential (MAF code) | random
    c.model.batch_norm = True  # after every MADE / coupling (MAF sec. 3.4); False for made
    c.model.log_scale_bound = config_dict.placeholder(float)  # None: unbounded (the paper)
    # made / maf / iaf / maf_mog (ignored by the others): the MADE's second output is a log
    # precision, log_scale = -0.5 logp, as in the MAF code (mades.py); False reads it as the
    # log-scale. MAF(5) reaches the paper's figure
    # with True (README); the same model family trains ~13 nats faster over the first epochs.
    c.model.made_log_precision = True
    c.model.num_components = 10  # made_mog / maf_mog only: Gaussians per conditional (MAF paper)
    # realnvp only: parity (odd/even coordinates, the MAF code's RealNVP baseline) | halves
    # (contiguous halves: the top of the image conditions the bottom) | checkerboard (images,
    # Dinh et al. 2017; image shape 28 x 28 x 1) | channel (needs >= 2 channels: not MNIST).
    c.model.realnvp_mask = "parity"

    c.batch_size = 100  # MAF App.
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 1e-4  # MAF App.: 1e-4 for flows, 1e-3 for MADE
    c.optimizer.beta_1 = 0.9
    c.optimizer.beta_2 = 0.999
    c.optimizer.epsilon = 1e-8
    c.optimizer.weight_decay = 1e-6  # MAF App.: L2 coefficient on weight matrices, lambda sum w^2

    c.loop = training.loop_config()
    c.loop.num_steps = 1000 * 500  # an upper bound: 1000 epochs of 500 steps; early stopping ends
    c.loop.log_every = 100
    c.loop.summary_every = 100
    c.loop.image_every = 1_000_000  # images at the end of every validation epoch only
    c.loop.checkpoint_every = 5_000  # also at the end of every validation epoch
    c.loop.jit = True  # XLA: 1.3x the tf.function steps/s for MAF(5) (benchmarks/flows_step.py)

    c.early_stopping = ml_collections.ConfigDict()
    c.early_stopping.patience_epochs = 30  # MAF App.: stop after 30 epochs without improvement
    c.early_stopping.eval_every_epochs = 1  # MAF App.: validation checked every epoch
    # Training images for the batch-norm statistics at each validation check (0: all, as the MAF
    # code); the test evaluation always uses eval.batch_norm_examples.
    c.early_stopping.batch_norm_examples = 0

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 1000  # images per log_prob call
    c.eval.batch_norm_examples = 0  # 0: batch-norm statistics from the whole training split
    c.eval.num_validation_images = 0  # 0: all 10,000
    c.eval.num_test_images = 0  # 0: all 10,000
    c.eval.num_samples = 16  # images drawn for TensorBoard at every validation check
    c.eval.after_training = True  # flows.train evaluates the best checkpoint on the test split

    if variant == "realnvp5":
        c.model.flow = "realnvp"
        c.model.made_log_precision = False  # no MADE
    elif variant == "made":
        c.model.flow = "made"
        c.model.num_layers = 1
        c.model.batch_norm = False
        c.optimizer.learning_rate = 1e-3  # MAF App.: 1e-3 for MADE
    elif variant == "made_mog":
        c.model.flow = "made_mog"
        c.model.made_log_precision = False  # the MoG MADE has its own log-scale outputs
        c.model.num_layers = 1
        c.model.batch_norm = False
        c.optimizer.learning_rate = 1e-3  # MAF App.: 1e-3 for MADE MoG
    elif variant == "maf_mog5":
        c.model.flow = "maf_mog"  # 5 MADEs with batch norm on a MADE MoG base; Adam 1e-4
    elif variant == "cpu":
        c.loop.num_steps = 15 * 500  # 15 epochs
        c.early_stopping.patience_epochs = 5
        c.early_stopping.batch_norm_examples = 10_000
        c.eval.num_samples = 8
    elif variant == "smoke":
        c.loop.jit = False  # compiling would dominate a few steps
        c.data.num_train_images = 200
        c.model.num_layers = 2
        c.model.hidden_units = (16,)
        c.batch_size = 20
        c.optimizer.learning_rate = 1e-3
        c.loop.num_steps = 20  # 2 epochs of 10 steps
        c.loop.log_every = 5
        c.loop.summary_every = 5
        c.loop.checkpoint_every = 10
        c.early_stopping.patience_epochs = 1
        c.eval.batch_size = 50
        c.eval.num_validation_images = 100
        c.eval.num_test_images = 100
        c.eval.num_samples = 4
    return c
