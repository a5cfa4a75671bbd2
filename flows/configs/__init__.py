"""Configs of `flows.train`: `mnist.py` (MAF paper density estimation) and `toy.py` (2-D
densities and energies)."""
