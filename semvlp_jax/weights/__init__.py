"""Weights in and out of other projects' checkpoint formats (HF BERT), by explicit name tables."""
