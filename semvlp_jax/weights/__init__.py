"""Weights in and out of other projects' checkpoint formats by explicit name tables: HF BERT
(`hf_bert`), ViT from HF, timm and big_vision (`vit`); the `convert` command."""
