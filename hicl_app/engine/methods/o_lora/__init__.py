"""O-LoRA: one LoRA per task, kept orthogonal to the earlier tasks' ones; `method.py` holds the
equations, `penalty.py` the regulariser. Importing this package (or `options`, `method`) does not
import torch.
"""
