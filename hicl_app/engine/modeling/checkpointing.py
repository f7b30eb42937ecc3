"""Activation ("gradient") checkpointing of the language model's decoder layers.

A LoRA step keeps every decoder layer's activations for the backward pass, and those grow with
batch x sequence x width x layers while the trainable factors stay tiny: on a 7B LLaVA with 576
image tokens per sample they, not the weights or the optimizer, are what runs a GPU out of
memory. Checkpointing keeps only each layer's input and recomputes the layer in the backward
pass: about a third more compute for activation memory of one layer instead of all of them.
Below about a billion parameters a LoRA step's activations fit easily and the recompute would
only cost time, hence the automatic threshold.

transformers' own switch does the work (each decoder layer is a `GradientCheckpointingLayer`
that only checkpoints in training mode with gradients on, so evaluation and `generate` are
untouched), non-reentrant: that variant needs no input that requires grad (LoRA leaves the
embeddings frozen), accepts keyword arguments, and works under DDP and with a second forward
in the same step (LLaVA-c's inquiry regulariser). Dropout masks are replayed from the saved RNG
state, so the trajectory is the one without checkpointing up to float rounding. The vision tower
is frozen in every method here and its features are often cached, so it is left alone.
"""

from __future__ import annotations

from torch import nn

from ..errors import EngineError
from .lora_factors import unwrap_peft
from .models import find_language_model

#: total parameters above which `enable_gradient_checkpointing(model, None)` turns it on
GRADIENT_CHECKPOINTING_ABOVE = 1_000_000_000


def hf_model(model: nn.Module) -> nn.Module:
    """The transformers `PreTrainedModel` inside `model` (a PEFT wrapper, or the model itself:
    a HiDe model stays its base class, with hooks attached)."""
    from transformers import PreTrainedModel

    inner = unwrap_peft(model)
    if isinstance(inner, PreTrainedModel):
        return inner
    found = next((m for m in inner.modules() if isinstance(m, PreTrainedModel)), None)
    if found is None:
        raise EngineError(f"no transformers model inside {type(model).__name__} to checkpoint")
    return found


def wants_gradient_checkpointing(model: nn.Module, setting: bool | None) -> bool:
    """`setting`, or for None whether the model is larger than GRADIENT_CHECKPOINTING_ABOVE."""
    if setting is not None:
        return bool(setting)
    return sum(p.numel() for p in model.parameters()) > GRADIENT_CHECKPOINTING_ABOVE


def enable_gradient_checkpointing(model: nn.Module, setting: bool | None) -> bool:
    """Checkpoint the decoder layers of `model` if `setting` (None: by size) asks; returns whether
    it is on. Forcing it on a family that cannot is an EngineError; auto then just leaves it off."""
    if not wants_gradient_checkpointing(model, setting):
        return False
    hf = hf_model(model)
    if not getattr(hf, "supports_gradient_checkpointing", False):
        if setting:
            raise EngineError(f"{type(hf).__name__} does not support gradient checkpointing",
                              hint="run without --gradient-checkpointing")
        return False
    kwargs = {"use_reentrant": False}
    if callable(getattr(hf, "activation_checkpointing_enable", None)):  # transformers >= 5.x: the new name
        hf.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    lm_name, _ = find_language_model(hf)
    on = False
    for name, module in hf.named_modules():  # the switch covers every sub-model: keep it to the text decoder
        if getattr(module, "gradient_checkpointing", False):
            inside = name == lm_name or name.startswith(lm_name + ".")
            module.gradient_checkpointing = inside
            on = on or inside
    if not on:
        raise EngineError(f"gradient checkpointing reached no layer of the language model {lm_name}")
    return True
