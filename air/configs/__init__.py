"""Configs of `air.train` (`air.py`: paper, vimco, cpu, smoke)."""
