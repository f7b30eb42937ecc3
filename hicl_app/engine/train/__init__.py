"""The shared training loop of every method and its exact, resumable checkpoints."""
