"""LLaVA-c: spectral-aware consolidation (`sac.py`), unsupervised inquiry regularization (`uir.py`)
and the projector's continual pretraining (`projector.py`); `method.py` wires them into the method
interface and documents the equations. Importing this package (or `options`, `method`) does not
import torch.
"""

#: a llava-c stage's files beside its PEFT adapter/
SAC_DIR = "sac"
SAC_FILE = "consolidated.safetensors"
SAC_MANIFEST = "manifest.json"
PROJECTOR_FILE = "projector.safetensors"
