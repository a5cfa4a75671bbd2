"""DRAW (Gregor, Danihelka, Graves, Rezende & Wierstra 2015): a recurrent VAE that draws an image
step by step on a canvas, reading and writing through Gaussian filterbank attention.

- `draw.model.DRAW`: the Sonnet module (encoder/decoder LSTMs, per-step Gaussian latents, the
  canvas, the losses L^x and L^z, importance weights, generation);
- `common.attention`: the Gaussian filterbank read and write (sec. 3.2), shared with the
  spatial transformer of AIR and SCAE;
- `draw.data`: statically binarized MNIST, 50,000 / 10,000 / 10,000;
- `draw.experiment`, `draw.plots`: training task, test evaluation, pictures;
- binaries `draw.train`, `draw.evaluate`, `draw.generate`.
"""

from draw.model import DRAW, DRAWOutput, Generation

__all__ = ["DRAW", "DRAWOutput", "Generation"]
