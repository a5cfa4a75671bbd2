"""Shared infrastructure: datasets, attention, experiment tools, training loop."""
