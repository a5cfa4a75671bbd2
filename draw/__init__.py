"""DRAW (Gregor et al. 2015): recurrent VAE with Gaussian filterbank attention.

Not implemented yet: its issue arrives later. `common.attention` is where the
Gaussian filterbanks will live, next to the spatial transformer.
"""
