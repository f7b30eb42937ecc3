"""Learning without Forgetting: Seq-LoRA distilled from the previous stage's model on the current
task's inputs (`method.py`; the loss in `distill.py`). Importing it (or `options`, `method`) does not
import torch."""

#: the name of the previous stage's adapter, loaded frozen beside the trained one
TEACHER = "lwf_teacher"
