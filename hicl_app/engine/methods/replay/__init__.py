"""Experience replay: Seq-LoRA whose stages also train on a fixed, seeded sample of every earlier
task's training data (`method.py`). Importing it does not import torch."""
