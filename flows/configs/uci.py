"""Configs for `flows.train` on the MAF paper's UCI data sets and BSDS300: MAF(5).

  python -m flows.train --config=flows/configs/uci.py:power
  python -m flows.train --config=flows/configs/uci.py:bsds300 --config.model.hidden_units="(1024,)"
  python -m flows.evaluate --run_dir=results/flows/1

Data: the authors' preprocessed archive (Zenodo record 1161203) unpacked under
`<data_dir>/maf/`; preprocessing in `flows.uci`, instructions in docs/uci.md. The test
log-likelihood is reported in nats, +- 2 standard errors (MAF Table 1).

Variants (Papamakarios et al. 2017, appendix; the authors' run_experiments.py):
  power, gas, hepmass, miniboone, bsds300: MAF(5) with batch norm after every MADE, sequential
      degrees, Adam 1e-4, batch 100, L2 weight decay 1e-6, early stopping with patience 30 epochs
      (validation every epoch), best model restored. Hidden units per MADE: 100 (POWER, GAS), 512
      (HEPMASS, MINIBOONE), 512 or 1024 (BSDS300); ReLU, tanh for GAS. The paper trains one and
      two hidden layers and reports the better on validation; these configs use two, and
      `--config.model.hidden_units="(100,)"` gives the other.
  smoke: seconds, for tests: a tiny MAF(2) on POWER-format data, 2 epochs of 10 steps.
"""

import ml_collections
from ml_collections import config_dict

from common import training

VARIANTS = ("power", "gas", "hepmass", "miniboone", "bsds300", "smoke")
#: variant -> (hidden units per layer, activation), MAF App. / run_experiments.py.
_PAPER_MODELS = {
    "power": (100, "relu"),
    "gas": (100, "tanh"),
    "hepmass": (512, "relu"),
    "miniboone": (512, "relu"),
    "bsds300": (512, "relu"),  # the paper also trains 1024
}


def get_config(variant: str = "power") -> ml_collections.ConfigDict:
    """Returns the config of `variant` (see module docstring).

    Raises:
      ValueError: for an unknown variant.
    """
    c = training.experiment_config("flows.experiment", variant, VARIANTS)
    c.task = "uci"  # flows.experiment dispatches on it
    # early stopping needs the default strategy: keep strategy "default"

    c.data = ml_collections.ConfigDict()
    c.data.dataset = "power" if variant == "smoke" else variant  # flows.uci.DATASETS
    c.data.data_dir = ""  # empty: $GENMODELS_DATA_DIR or ~/.cache/genmodels; files in maf/
    c.data.num_train_examples = 0  # 0: the whole training split; smoke trains on a prefix

    units, activation = _PAPER_MODELS.get(c.data.dataset, (100, "relu"))
    c.model = ml_collections.ConfigDict()
    c.model.flow = "maf"  # maf | realnvp | made (flows.make_flow)
    c.model.num_layers = 5  # MAF(5) (MAF Table 1)
    c.model.hidden_units = (units, units)  # MAF App.: 1 or 2 layers, the better on validation
    c.model.activation = activation  # MAF App.: ReLU, tanh for GAS
    c.model.hidden_degrees = "sequential"  # MADE degrees as in the MAF code
    c.model.batch_norm = True  # after every MADE (MAF sec. 3.4)
    c.model.log_scale_bound = config_dict.placeholder(float)  # None: unbounded (the paper)
    c.model.realnvp_mask = "parity"  # realnvp only: odd/even coordinates as in the MAF code

    c.batch_size = 100  # MAF App.
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 1e-4  # MAF App.: 1e-4 for flows
    c.optimizer.beta_1 = 0.9
    c.optimizer.beta_2 = 0.999
    c.optimizer.epsilon = 1e-8
    c.optimizer.weight_decay = 1e-6  # MAF App.: L2 coefficient on the weight matrices

    c.loop = training.loop_config()
    c.loop.num_steps = 100_000_000  # an upper bound: early stopping ends the run
    c.loop.log_every = 1000
    c.loop.summary_every = 1000
    c.loop.image_every = 100_000_000  # no images for tabular data
    c.loop.checkpoint_every = 20_000  # also at the end of every validation epoch

    c.early_stopping = ml_collections.ConfigDict()
    c.early_stopping.patience_epochs = 30  # MAF App.: 30 epochs without improvement
    c.early_stopping.eval_every_epochs = 1  # MAF App.: validation checked every epoch
    # Training examples (evenly spaced) for the batch-norm statistics at each validation check;
    # 0: all, as the MAF code. The test evaluation uses eval.batch_norm_examples.
    c.early_stopping.batch_norm_examples = 0

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 10_000  # examples per log_prob call
    c.eval.batch_norm_examples = 0  # 0: batch-norm statistics from the whole training split
    c.eval.num_validation_examples = 0  # 0: the whole split
    c.eval.num_test_examples = 0  # 0: the whole split
    c.eval.after_training = True  # flows.train evaluates the best checkpoint on the test split

    if variant == "bsds300":
        # One pass of 1,000,000 patches holds 2-4 GB per hidden layer of 512-1024 units: the
        # statistics come from 200,000 evenly spaced patches (standard error ~0.002 std).
        c.early_stopping.batch_norm_examples = 200_000
        c.eval.batch_norm_examples = 200_000
    elif variant == "smoke":
        c.data.num_train_examples = 200
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
        c.eval.num_validation_examples = 100
        c.eval.num_test_examples = 100
    return c
