"""HiDe-LLaVA's parts: task experts, fusion of the general layers, dual-modality routing, CKA probes,
the stage state on disk, and building the model after a stage. `engine/methods/hide.py` wires them
into the method interface. Importing this package (or `options`) does not import torch.
"""
