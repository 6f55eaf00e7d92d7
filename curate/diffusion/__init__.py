"""Diffusion training and generation: the tiny offline model and the caption/embedding mitigations."""
