"""Adapter merging: one LoRA per task trained from the base, merged after every stage through
PEFT's `add_weighted_adapter`; `method.py` holds the equations. Importing this package (or
`options`, `method`) does not import torch.
"""
