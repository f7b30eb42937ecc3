"""MoELoRA: a mixture of LoRA experts with a learned per-token router in every target linear;
`method.py` holds the equations, `layer.py` the module and its files. Importing this package (or
`options`, `method`) does not import torch.
"""

#: the MoELoRA state's layout under a stage folder (see `layer.py`)
STATE_DIR = "moelora"
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
