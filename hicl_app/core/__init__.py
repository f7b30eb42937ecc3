"""Pure Python shared by every layer: errors, atomic files, settings, task files, metrics."""
