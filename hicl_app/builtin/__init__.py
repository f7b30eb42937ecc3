"""The built-in benchmark and tiny base: synthetic UCIT-like tasks, a tiny LLaVA built and pretrained
locally, and `hicl demo`, which runs every method on them. Nothing here is needed to train a real model."""
