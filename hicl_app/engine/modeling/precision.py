"""Mixed-precision compute on CUDA: the forward (and loss) under `torch.autocast`.

On CUDA the base is loaded in bfloat16 (float16 without bf16), but PEFT keeps the LoRA factors
in float32 (`autocast_adapter_dtype`), so every adapted layer upcasts its input, multiplies in
float32 and casts back. Autocast runs those matmuls in the low precision too, on tensor cores,
and keeps the ops it lists as unsafe there (softmax, norms, reductions, the loss) in float32.
On the CPU the engine computes in float32, where autocast would only lose precision: no-op.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

_LOW = (torch.bfloat16, torch.float16)


def autocast_context(device: torch.device | str, dtype: torch.dtype) -> ContextManager:
    """`torch.autocast("cuda", dtype)` when `device` is CUDA and `dtype` is bfloat16 / float16,
    else a context that does nothing. (float16 has no loss scaling here: prefer bfloat16.)"""
    if torch.device(device).type == "cuda" and dtype in _LOW:
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()
