"""HiDe-LLaVA: task experts, fusion of the general layers, dual-modality routing, the stage state on
disk, and the model after a stage; `method.py` wires them into the method interface and documents
the equations. Importing this package (or `options`, `method`) does not import torch.
"""

#: the HiDe state's layout under a stage folder (see `state.py`)
STATE_DIR = "hide"
EXPERTS_FILE = "experts.safetensors"
ANCHORS_FILE = "anchors.safetensors"
MANIFEST_FILE = "manifest.json"
