"""Online EWC on the LoRA parameters: Seq-LoRA with a quadratic penalty that holds the parameters
the earlier tasks' diagonal Fisher marks as important near their values (`method.py`; the Fisher
and the penalty in `fisher.py`). Importing it (or `options`, `method`) does not import torch."""

#: a stage's EWC state beside its PEFT adapter/: the accumulated Fisher and the anchor θ*
STATE_DIR = "ewc"
STATE_FILE = "state.safetensors"
