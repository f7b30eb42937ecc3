"""Loading a base model, its LoRA adapters and their raw factors, and streaming tensor files."""
