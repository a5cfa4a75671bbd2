"""Configs for `draw.train`: DRAW on binarized MNIST (Gregor et al. 2015).

  python -m draw.train --config=draw/configs/mnist.py:cpu
  python -m draw.train --config=draw/configs/mnist.py:cpu --config.model.attention=False

Variants:
  paper:         the MNIST generation row of Table 3: T = 64 steps, LSTMs of 256 units, 100
                 latent units per step, 2x2 read and 5x5 write windows; Adam (sec. 4: "the
                 Adam optimisation algorithm"). The paper states no learning rate, batch size or
                 training length: Adam's usual 1e-3, batch 100, and training until the
                 validation bound stops improving are this project's choices (README).
  no_attention:  `paper` without attention (sec. 3.1), the paper's baseline (Table 2).
  cpu:           trains within 60 minutes on 2 CPU cores: T = 16, a 5x5 read (2x2 starts on
                 the empty corner pixels), 11,000 steps with a cosine learning-rate decay
                 (README: results and deviations).
  smoke:         tiny, for tests (seconds).

`paper` on its own collapses to the mean image in the first few hundred steps (L^z -> 0);
`--config.loss.kl_warmup_steps=1000` (a KL warm-up, not in the paper) is how the README's
`paper` figures were trained (draw/README.md: Deviations).
"""

import ml_collections

from common import training

VARIANTS = ("paper", "no_attention", "cpu", "smoke")


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
    """Returns the config of `variant` (module docstring).

    Raises:
      ValueError: an unknown variant.
    """
    c = training.experiment_config("draw.experiment", variant, VARIANTS)

    c.data = ml_collections.ConfigDict()
    c.data.data_dir = ""  # empty: $GENMODELS_DATA_DIR or ~/.cache/genmodels
    c.data.source = "static"  # static (fixed-seed binarization of MNIST) | larochelle (.amat)
    c.data.mnist_source = "auto"  # where raw MNIST comes from (common.data.mnist)
    c.data.binarization_seed = 0  # the static draw; the test split uses seed + 1

    c.model = ml_collections.ConfigDict()
    c.model.num_steps = 64  # T (Table 3)
    c.model.lstm_size = 256  # Table 3
    c.model.latent_size = 100  # Table 3
    c.model.attention = True
    c.model.read_size = 2  # N of the read window (Table 3)
    # Initial bias of the read window's (g~_X, g~_Y, log sigma^2, log delta~, log gamma); the
    # paper states none: zeros (Sonnet's default). draw/model.py explains the choice.
    c.model.read_window_bias = (0.0, 0.0, 0.0, 0.0, 0.0)
    c.model.write_size = 5  # N of the write window (Table 3)
    c.model.zero_write_init = False  # True: the write patch's weights start at 0 (no writes)
    c.model.canvas_bias_from_data = True  # c_0 starts at the logit of the mean training image
    # The T steps as a Python loop (a graph T times larger) instead of one tf.scan: 0.19 s per
    # step against 0.24 s at the paper sizes under tf.function (benchmarks/draw_step.py); the
    # trace takes about 45 s, and XLA would compile it for over 10 minutes (jit stays off).
    c.model.unroll = True

    c.loss = ml_collections.ConfigDict()
    # > 0: the weight of L^z rises linearly from 0 to 1 over this many steps (not in the paper)
    c.loss.kl_warmup_steps = 0

    c.batch_size = 100
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"  # sec. 4
    c.optimizer.learning_rate = 1e-3
    c.optimizer.epsilon = 1e-7
    c.optimizer.global_clipnorm = 0.0  # 0: no clipping
    c.optimizer.schedule = "constant"  # constant | cosine (to final_fraction * lr)
    c.optimizer.final_fraction = 0.0

    c.loop = training.loop_config()
    c.loop.num_steps = 500_000
    c.loop.log_every = 500
    c.loop.summary_every = 500
    c.loop.image_every = 5_000
    c.loop.eval_every = 5_000
    c.loop.checkpoint_every = 5_000
    c.loop.jit = False  # XLA: 1.17 s per step even with tf.scan (benchmarks/draw_step.py)
    # TensorFlow's thread pools, sized for 2 CPU cores: two ops at a time, one thread each. The
    # paper sizes (tf.scan) take 0.24 s per step against 0.32 s with TensorFlow's default pools
    # (benchmarks/draw_step.py, README: Speed). Not a model
    # setting: on more cores or a GPU measure, or set both to 0 (TensorFlow's default).
    c.inter_op_threads = 2
    c.intra_op_threads = 1

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 500
    c.eval.num_validation_images = 0  # 0: all 10,000 (validation bound during training)
    c.eval.num_test_images = 0  # 0: all 10,000
    c.eval.num_samples = 100  # importance samples per test image for the NLL estimate
    c.eval.chunk_samples = 10  # samples per forward pass (memory)
    c.eval.after_training = True

    if variant == "no_attention":
        c.model.attention = False
    elif variant == "cpu":
        c.model.num_steps = 16  # 0.050 s per step on 2 cores instead of 0.19 s at T = 64
        c.model.read_size = 5  # a 2x2 read starts on the (empty) corner pixels; 5x5 spans the image
        c.loop.num_steps = 11_000
        c.loop.log_every = 200
        c.loop.summary_every = 200
        c.loop.image_every = 2_000
        c.loop.eval_every = 1_000
        c.loop.checkpoint_every = 1_000
        c.optimizer.schedule = "cosine"
        c.optimizer.final_fraction = 0.05
        c.eval.num_validation_images = 2_000
    elif variant == "smoke":
        c.model.num_steps = 3
        c.model.lstm_size = 16
        c.model.latent_size = 4
        c.model.read_size = 3
        c.model.canvas_bias_from_data = False  # so that the e2e test sees the loss fall
        c.inter_op_threads = 0  # TensorFlow's default: tests train in processes that ran ops
        c.intra_op_threads = 0
        c.batch_size = 20
        c.loop.num_steps = 30
        c.loop.log_every = 10
        c.loop.summary_every = 10
        c.loop.image_every = 15
        c.loop.eval_every = 15
        c.loop.checkpoint_every = 15
        c.eval.batch_size = 100
        c.eval.num_validation_images = 200
        c.eval.num_test_images = 200
        c.eval.num_samples = 4
        c.eval.chunk_samples = 2
    return c
