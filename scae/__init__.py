"""Stacked Capsule Autoencoders (Kosiorek et al. 2019).

Not implemented yet: its issue arrives later. It will reuse the spatial
transformer of `common.attention` and add a Set Transformer.
"""
