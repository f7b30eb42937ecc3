"""Turning task records into model inputs, and caching a frozen vision tower's features."""
