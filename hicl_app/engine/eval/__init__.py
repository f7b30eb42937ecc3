"""Greedy generation, scoring (exact, relaxed, choice, caption) and evaluating a task."""
