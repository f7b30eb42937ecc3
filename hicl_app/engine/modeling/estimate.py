"""Parameters, method state and peak training memory of a run, from a base model's config alone.

A 7B LLaVA on eight GPUs should be sized before the GPUs are booked, and a run that does not fit
fails only once its base has loaded. The model is built on the meta device (shapes, no storage),
so the counts are those of the real module tree, for any family the Auto classes know, in about
a second on a CPU; the memory is arithmetic on those shapes.

Memory per device in bytes, with w the bytes of the dtype (2 for bfloat16 / float16, 4 for
float32), N ranks, b = ⌈B / N⌉ samples per rank (the largest share), s = max_length + one image's tokens, L decoder
layers of width h, key/value width h_kv and MLP width i, V the vocabulary, P all parameters and
P_t the trainable ones:

    weights      w · P          on every rank (DDP replicates the model)
    trainable    16 · P_t       float32 value, gradient and AdamW's two moments
    activations  L · b·s · A    what the backward pass needs, kept from the forward
                 L · b·s · w·h + b·s · A   with gradient checkpointing: each layer's input, and
                                one layer's activations while it is recomputed
    logits       4 · b·s · V    the float32 logits the loss is computed from

    A = 8h + w·(4h + 2h_kv) + w·(h + 4i) + (w·c + m) · Σ in_features of the LoRA targets

per token and decoder layer: the two RMSNorms keep their input in float32 (8h); attention keeps
the q/k/v input, q, k and v for SDPA, its output and o_proj's input; the SwiGLU MLP keeps the
gate/up input, gate, SiLU(gate), up and down_proj's input; each LoRA branch keeps a copy of its
input (c = 1: PEFT casts it to the float32 adapter and autocast back to w; c = 0 in float32
without dropout, where it is the layer's own input) and, with dropout, its mask (m = 1 byte).
This is the per-layer count of Korthikanti et al. 2022 (34·s·b·h + 5·a·s²·b bytes for a GPT
block in 16 bits) redone for a Llama block: no s² term, since SDPA keeps no attention matrix;
SwiGLU's three tensors of width i for GeLU's two of 4h; no dropout in the base; and the LoRA
branches, which on every linear keep about as much again as the block itself.

Left out: the vision tower and projector (frozen: no gradient flows into them and their features
are often cached, so their forward keeps nothing), the CUDA context and allocator slack, the
transient buffers of the loss and of one layer's backward, LLaVA-c's short text-only inquiry
forward and its optional projector pretraining (no LoRA branches, so less than a LoRA stage).

The state after T tasks is what the last stage keeps for the model that answers and the next
stage, in float32: seq-lora and joint one adapter; hide every task's expert on every target
layer (its fusion is recomputed from them) plus two anchors of width h per task, of which the
answering model holds the experts of its expanded layers; llava-c the consolidated delta of each
target at rank min(sac_rank, T·r) (T·r without SAC) plus the projector when it was pretrained.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig
from ..errors import EngineError
from .checkpointing import GRADIENT_CHECKPOINTING_ABOVE, wants_gradient_checkpointing
from .models import decoder_layers, find_language_model, linear_names, quiet_transformers

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
#: float32 value + gradient + AdamW's exp_avg and exp_avg_sq, per trainable parameter
TRAINABLE_BYTES = 16
STATE_BYTES = 4
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def load_config(base: str):
    """The transformers config of a local folder holding config.json (no weights read) or a hub id."""
    from transformers import AutoConfig

    quiet_transformers()
    path = Path(base).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise EngineError(f"folder {base} has no config.json",
                              hint="pass a folder saved with save_pretrained (the weights are not needed)")
        where = str(path / "config.json")
    elif _HUB_ID.fullmatch(base) and not base.startswith((".", "~")):
        where = f"hub id {base!r} (and no such folder)"
    else:
        raise EngineError(f"no folder {base}", hint="pass a folder holding config.json or a hub id")
    try:
        return AutoConfig.from_pretrained(str(path) if path.is_dir() else base)
    except Exception as exc:  # OSError, ValueError, KeyError... for a bad file or an unknown id
        raise EngineError(f"cannot read the config of {where}: {type(exc).__name__}: {exc}") from None


def meta_model(config) -> nn.Module:
    """The image-text-to-text model of `config` with every tensor on the meta device."""
    from transformers import AutoModelForImageTextToText

    quiet_transformers()
    try:
        with torch.device("meta"):
            return AutoModelForImageTextToText.from_config(config)
    except (ValueError, KeyError) as exc:
        raise EngineError(f"{type(config).__name__} is not an image-text-to-text model: {exc}",
                          hint="pass a multimodal base such as LLaVA-1.5-hf") from None


def _count(module: nn.Module, seen: set[int]) -> int:
    """Parameters of `module` not counted yet (tied weights once)."""
    total = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def _submodule(model: nn.Module, leaves: tuple[str, ...]) -> nn.Module | None:
    hits = sorted((n for n, _ in model.named_modules() if n.split(".")[-1] in leaves), key=len)
    return model.get_submodule(hits[0]) if hits else None


def parts(model: nn.Module) -> dict[str, int]:
    """Parameters of the language model (embeddings + decoder), vision tower, projector and the
    rest (the lm_head, unless tied to the embeddings)."""
    from ..methods.llava_c.projector import find_projector

    seen: set[int] = set()
    out = {"language_model": _count(find_language_model(model)[1], seen)}
    vision = _submodule(model, ("vision_tower", "visual", "vision_model"))
    out["vision_tower"] = _count(vision, seen) if vision is not None else 0
    try:
        out["projector"] = _count(find_projector(model)[1], seen)
    except EngineError:
        out["projector"] = 0
    out["lm_head_and_other"] = _count(model, seen)
    return out


def lora_units(model: nn.Module) -> list[int]:
    """Per decoder layer, Σ (in + out) over the default LoRA targets: rank r adds r times that."""
    names = linear_names(model)
    units = []
    for layer in decoder_layers(model)[1]:
        mods = [layer.get_submodule(n) for n in names]
        units.append(sum(m.in_features + m.out_features for m in mods))
    return units


def lora_inputs(model: nn.Module) -> int:
    """Σ in_features of the LoRA targets of one decoder layer (the largest)."""
    names = linear_names(model)
    return max(sum(layer.get_submodule(n).in_features for n in names)
               for layer in decoder_layers(model)[1])


def image_tokens(config) -> int:
    """Tokens one image adds to the sequence: the vision tower's patches (576 for CLIP-336/14;
    +1 CLS with vision_feature_select_strategy "full"), else the config's image_seq_length."""
    vision = getattr(config, "vision_config", None)
    size, patch = getattr(vision, "image_size", None), getattr(vision, "patch_size", None)
    if isinstance(size, int) and isinstance(patch, int) and patch > 0:
        full = getattr(config, "vision_feature_select_strategy", "default") == "full"
        return (size // patch) ** 2 + int(full)
    return int(getattr(config, "image_seq_length", 0) or 0)


def _text_dims(config) -> dict[str, int]:
    text = config.get_text_config() if callable(getattr(config, "get_text_config", None)) else config
    h = int(text.hidden_size)
    heads = int(getattr(text, "num_attention_heads", 1) or 1)
    head_dim = int(getattr(text, "head_dim", None) or h // heads)
    kv = int(getattr(text, "num_key_value_heads", None) or heads)
    return {"hidden": h, "kv_hidden": kv * head_dim, "intermediate": int(getattr(text, "intermediate_size", None) or 4 * h),
            "vocab": int(text.vocab_size)}


def activation_bytes_per_token(dims: dict[str, int], lora_in: int, w: int, dropout: float) -> int:
    """A of the module docstring: bytes one token keeps in one decoder layer for the backward pass."""
    h, kv, i = dims["hidden"], dims["kv_hidden"], dims["intermediate"]
    mask = 1 if dropout > 0 else 0
    copy = 1 if (w < 4 or mask) else 0
    return 8 * h + w * (4 * h + 2 * kv) + w * (h + 4 * i) + (w * copy + mask) * lora_in


def method_state(method: str, options: Any, units: list[int], rank: int, tasks: int, dims: dict[str, int],
                 projector: int) -> dict[str, Any]:
    """Parameters the method keeps after `tasks` tasks (see the module docstring), with what was assumed."""
    one = rank * sum(units)
    if method == "hide":
        from ..methods.hide.model import resolve_expand

        r_e = options.expert_rank or rank
        expanded = resolve_expand(options.expand, len(units))
        notes = []
        if expanded is None:
            expanded = list(range(len(units)))
            notes.append("expand=auto counted as every layer expanded (the upper bound: the CKA of the "
                         "trained experts decides at run time)")
        held = expanded if options.merge_fused else list(range(len(units)))
        experts = tasks * r_e * sum(units)
        anchors = tasks * 2 * dims["hidden"]
        notes.append(f"{tasks} experts of rank {r_e} on every target layer; the answering model holds those of "
                     f"layer(s) {_layers(expanded)}" + (", the others fused into the weights" if options.merge_fused else ""))
        return {"parameters": experts + anchors, "parts": {"experts": experts, "anchors": anchors},
                "expanded_layers": expanded, "answering_extra": tasks * r_e * sum(units[k] for k in held),
                "notes": notes}
    if method == "llava-c":
        kept = min(options.sac_rank or 2 * rank, tasks * rank) if options.sac else tasks * rank
        out = {"consolidated": kept * sum(units)}
        if options.pretrain_task:
            out["projector"] = projector
        how = f"rank min(sac_rank, T·r) = {kept}" if options.sac else f"rank T·r = {kept} (sac off: exact sum)"
        return {"parameters": sum(out.values()), "parts": out,
                "notes": [f"consolidated delta of every target layer at {how}, merged into the weights to answer"]}
    note = {"seq-lora": "one adapter, trained task after task",
            "joint": f"one adapter, trained on the union of the {tasks} tasks"}.get(
        method, f"one adapter assumed ({method} has no estimate of its own extras)")
    return {"parameters": one, "parts": {"adapter": one}, "notes": [note]}


def _layers(indices: list[int]) -> str:
    return ",".join(map(str, indices)) if len(indices) <= 8 else f"{indices[0]}..{indices[-1]} ({len(indices)})"


def estimate(config, method: str, *, method_options: dict[str, Any] | None = None, tasks: int = 1,
             rank: int = TrainConfig.rank, nproc: int = 1, batch_size: int = TrainConfig.batch_size,
             max_length: int = TrainConfig.max_length, dtype: str = "bfloat16",
             gradient_checkpointing: bool | None = None, dropout: float = TrainConfig.dropout) -> dict[str, Any]:
    """Parameter counts, the method's state after `tasks` tasks and peak memory per device (bytes)
    of training `method` with LoRA rank `rank` on `config`'s model; JSON-ready."""
    from ..methods import get_method

    TrainConfig(rank=rank, batch_size=batch_size, max_length=max_length, dropout=dropout)  # its own checks
    bad = [msg for ok, msg in [
        (nproc >= 1, f"nproc must be >= 1, got {nproc}"),
        (tasks >= 1, f"tasks must be >= 1, got {tasks}"),
        (dtype in DTYPE_BYTES, f"dtype must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")] if not ok]
    if bad:
        raise EngineError("; ".join(bad))
    options = get_method(method, method_options).options

    model = meta_model(config)
    counts = parts(model)
    total = sum(counts.values())
    units = lora_units(model)
    trainable = rank * sum(units)
    dims = _text_dims(config)
    w = DTYPE_BYTES[dtype]
    n_img = image_tokens(config)
    b, s = -(-batch_size // nproc), max_length + n_img
    tokens = b * s
    per_token = activation_bytes_per_token(dims, lora_inputs(model), w, dropout)
    fixed = {
        "weights": w * total,
        "trainable_state": TRAINABLE_BYTES * trainable,
        "logits": 4 * tokens * dims["vocab"],
    }
    acts = {"checkpointing": len(units) * tokens * w * dims["hidden"] + tokens * per_token,
            "no_checkpointing": len(units) * tokens * per_token}
    on = wants_gradient_checkpointing(model, gradient_checkpointing)
    state = method_state(method, options, units, rank, tasks, dims, counts["projector"])
    state["bytes"] = STATE_BYTES * state["parameters"]
    return {
        "model": type(model).__name__, "method": method, "tasks": tasks, "rank": rank,
        "method_options": {f.name: getattr(options, f.name) for f in fields(options)},
        "parameters": total, "parts": counts, "trainable": trainable, "state": state,
        "memory": {
            "nproc": nproc, "batch_size": batch_size, "per_rank_batch": b,
            "max_length": max_length, "image_tokens": n_img, "sequence": s, "dtype": dtype,
            "gradient_checkpointing": on, "gradient_checkpointing_auto": gradient_checkpointing is None,
            "gradient_checkpointing_above": GRADIENT_CHECKPOINTING_ABOVE,
            **fixed, "activations": acts,
            "peak_checkpointing": sum(fixed.values()) + acts["checkpointing"],
            "peak_no_checkpointing": sum(fixed.values()) + acts["no_checkpointing"],
            "peak": sum(fixed.values()) + acts["checkpointing" if on else "no_checkpointing"],
        },
    }

