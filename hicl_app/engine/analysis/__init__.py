"""Representation similarity (CKA) between task models on shared probe inputs, for any method."""
