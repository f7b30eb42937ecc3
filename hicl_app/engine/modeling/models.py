"""Loading an image-text-to-text base model, and finding where LoRA may go inside it.

Family-agnostic on purpose: everything goes through `AutoModelForImageTextToText` /
`AutoProcessor`, and the language model and its decoder layers are found by walking the module
tree rather than by hard-coded attribute paths, so LLaVA-1.5-hf, LLaVA-NeXT or Qwen-VL style
checkpoints all work; the tiny test model takes the same path.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import EngineError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A base model in eval mode on its device, with the processor that feeds it."""

    model: nn.Module
    processor: Any
    device: torch.device
    dtype: torch.dtype


def quiet_transformers() -> None:
    """Progress bars and info chatter would flood the worker's captured logs."""
    import warnings

    from transformers.utils import logging as hf_logging

    # peft still calls this transformers 5 deprecated property on every wrap
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def resolve_device_dtype(device: str | None = None, dtype: str | None = None) -> tuple[torch.device, torch.dtype]:
    """CUDA -> bfloat16 (float16 on GPUs without bf16), else CPU float32, unless overridden."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise EngineError(f"unknown device {device!r}: {exc}", hint="use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"device {device!r} asked for but CUDA is not available",
                          hint="leave the device unset to use the CPU")
    if dtype is not None:
        if dtype not in _DTYPES:
            raise EngineError(f"unknown dtype {dtype!r}", hint=f"use one of {', '.join(_DTYPES)}")
        return dev, _DTYPES[dtype]
    if dev.type == "cuda":
        return dev, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return dev, torch.float32


def check_family(base: str) -> None:
    """EngineError, before any weight is read, when `base` is a family hicl cannot tune.

    hicl needs an image-text-to-text head (what `AutoModelForImageTextToText` maps); a config
    it cannot even read is left to the load itself, which says why.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(base)
    except Exception:
        return
    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise EngineError(f"{base} is a {model_type!r} model, which has no image-text-to-text head in transformers "
                          "(AutoModelForImageTextToText)",
                          hint="use an image-text-to-text model, e.g. LLaVA-1.5, LLaVA-OneVision, Qwen2-VL or Idefics3")


def check_chat_template(processor: Any, where: str) -> None:
    """EngineError when the processor has no chat template to render prompts with.

    LLaVA-1.5's processor may come without one: its well-known format is used then.
    """
    template = getattr(processor, "chat_template", None) or getattr(getattr(processor, "tokenizer", None),
                                                                     "chat_template", None)
    if template is None and type(processor).__name__ != "LlavaProcessor":
        raise EngineError(f"the processor of {where} ({type(processor).__name__}) has no chat template",
                          hint="use the instruction-tuned checkpoint, or add chat_template.jinja to the folder")


def load_base(cfg: ModelConfig) -> LoadedModel:
    """Load model + processor from a local folder or hub id; EngineError says why it failed.

    No `attn_implementation` is asked for: transformers 5 already picks SDPA for every family
    that supports it (LLaVA, its CLIP tower and Llama decoder included) and eager for the rest,
    where asking for "sdpa" outright would fail.
    """
    quiet_transformers()
    from transformers import AutoModelForImageTextToText

    from .processors import load_processor

    device, dtype = resolve_device_dtype(cfg.device, cfg.dtype)
    local = os.path.isdir(cfg.base)
    where = f"folder {cfg.base}" if local else f"hub id {cfg.base!r}"
    hint = ("the folder must hold config.json, the weights and the processor files (save_pretrained output)"
            if local else "pass a local folder, or check the id and the network (HF_HUB_OFFLINE=1 allows only the cache)")
    check_family(cfg.base)
    try:
        processor = load_processor(cfg.base)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError... for bad folders
        raise EngineError(f"could not load the base model from {where} (its processor): {type(exc).__name__}: {exc}",
                          hint=hint) from exc
    tok = getattr(processor, "tokenizer", None)
    if tok is None or not hasattr(processor, "image_processor"):
        raise EngineError(f"the processor of {where} ({type(processor).__name__}) has no "
                          f"{'tokenizer' if tok is None else 'image processor'}", hint=hint)
    check_chat_template(processor, where)
    try:
        model = AutoModelForImageTextToText.from_pretrained(cfg.base, dtype=dtype)
    except Exception as exc:
        raise EngineError(f"could not load the base model from {where}: {type(exc).__name__}: {exc}",
                          hint=hint) from exc
    if tok.pad_token_id is None:  # generation and batching need a pad id; eos is the usual stand-in
        tok.pad_token = tok.eos_token
    model.to(device)
    model.eval()
    return LoadedModel(model=model, processor=processor, device=device, dtype=dtype)


def find_language_model(model: nn.Module) -> tuple[str, nn.Module]:
    """(qualified name, module) of the text decoder inside a multimodal model."""
    names = {id(m): n for n, m in model.named_modules()}
    getter = getattr(model, "get_decoder", None)
    candidate = getter() if callable(getter) else None
    if candidate is not None and id(candidate) in names and names[id(candidate)]:
        return names[id(candidate)], candidate
    hits = sorted((n for n, _ in model.named_modules() if n.split(".")[-1] in ("language_model", "text_model")),
                  key=len)
    if not hits:
        raise EngineError(f"cannot find the language model inside {type(model).__name__}")
    return hits[0], model.get_submodule(hits[0])


#: what the families call their vision encoder (LLaVA family, Idefics3 / SmolVLM, Qwen2-VL family)
VISION_TOWER_NAMES = ("vision_tower", "vision_model", "visual")


def vision_tower(model: nn.Module) -> tuple[str, nn.Module]:
    """(qualified name, module) of the vision encoder inside a multimodal model."""
    hits = sorted((n for n, _ in model.named_modules() if n.split(".")[-1] in VISION_TOWER_NAMES), key=len)
    if not hits:
        raise EngineError(f"cannot find the vision tower inside {type(model).__name__}",
                          hint=f"hicl looks for a module named {', '.join(VISION_TOWER_NAMES)}")
    return hits[0], model.get_submodule(hits[0])


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(qualified name, ModuleList) of the language model's transformer blocks."""
    lm_name, lm = find_language_model(model)
    lists = [(n, m) for n, m in lm.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise EngineError(f"cannot find decoder layers inside {lm_name}")
    name, layers = max(lists, key=lambda item: (item[0].split(".")[-1] == "layers", len(item[1])))
    return f"{lm_name}.{name}", layers


def linear_names(model: nn.Module) -> list[str]:
    """Linear sub-module paths inside one decoder layer, e.g. 'self_attn.q_proj', 'mlp.down_proj'.

    Layers already wrapped by PEFT count under their own name, not as '....base_layer'.
    """
    _, layers = decoder_layers(model)
    names = [n.removesuffix(".base_layer") for n, m in layers[0].named_modules() if isinstance(m, nn.Linear)]
    return list(dict.fromkeys(n for n in names if ".lora_" not in f".{n}"))


def lora_target_regex(model: nn.Module, targets: list[str] | None = None) -> str:
    """PEFT `target_modules` regex that matches only the language model's decoder linears.

    Plain names such as ["q_proj", "v_proj"] would also hit the CLIP vision tower, and
    "all-linear" adds the projector; a regex anchored at the decoder layers path avoids both.
    `targets` may name leaf modules ("q_proj") or paths inside a layer ("self_attn.q_proj").
    """
    if callable(getattr(model, "get_base_model", None)):  # PEFT matches names inside the wrapped model
        model = model.get_base_model()
    prefix, _ = decoder_layers(model)
    available = linear_names(model)
    if targets is None:
        chosen = available
    else:
        chosen, unknown = [], []
        for t in targets:
            hits = [n for n in available if n == t or n.split(".")[-1] == t]
            if hits:
                chosen.extend(hits)
            else:
                unknown.append(t)
        if unknown:
            leaves = sorted({n.split(".")[-1] for n in available})
            raise EngineError(f"LoRA target(s) not found in the language model: {', '.join(unknown)}",
                              hint=f"available: {', '.join(leaves)}")
    alternatives = "|".join(re.escape(n) for n in dict.fromkeys(chosen))
    return rf"^{re.escape(prefix)}\.\d+\.(?:{alternatives})$"


def env_info(device: torch.device, dtype: torch.dtype, seed: int) -> dict[str, Any]:
    """What a result depends on besides the data and config: recorded with every stage."""
    import peft
    import transformers

    from ...core.provenance import provenance

    info: dict[str, Any] = {
        **provenance(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "seed": seed,
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info
