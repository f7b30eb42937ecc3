"""The mixture-of-LoRA-experts linear, and the files that hold every one of a model.

`MoELoraLinear` wraps a frozen linear `W` in place (the module keeps it as `base_layer`):

    g(x) = softmax(R x)                       (top-k: softmax over the k largest logits of R x)
    y    = W x + s Σ_e g_e(x) B_e A_e x,      s = α / (E · r_e)

with the router `R` (E×in, no bias), the experts' A's stacked row-wise (`lora_A`, E·r_e × in)
and B's column-wise (`lora_B`, out × E·r_e), so the mixture costs two matmuls whatever E. All three
are float32 parameters (like PEFT's adapter weights on a bf16 base). The gates are computed per
token from that token's own input, so padding never reaches another token's routing and a batch
gives what its samples give one by one.

Files under a stage folder:

    moelora/weights.safetensors   "<module path>.router" [E, in], ".lora_A" [E·r_e, in], ".lora_B" [out, E·r_e]
    moelora/config.json           format, experts, rank_per_expert, top_k, scale, dropout, modules, base
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ....core.fsio import atomic_write_json, publish_dir, sha256_file, staging_dir
from ...errors import EngineError
from . import CONFIG_FILE, STATE_DIR, WEIGHTS_FILE

FORMAT = 1


@dataclass(frozen=True)
class MoEConfig:
    experts: int
    rank_per_expert: int
    top_k: int  # 0: every expert
    scale: float
    dropout: float
    modules: list[str]


class MoELoraLinear(nn.Module):
    """A frozen linear plus a routed mixture of LoRA experts (see the module docstring)."""

    def __init__(self, base_layer: nn.Linear, experts: int, rank: int, top_k: int, scale: float, dropout: float):
        super().__init__()
        self.base_layer = base_layer
        self.experts, self.rank, self.top_k, self.scale = experts, rank, top_k, scale
        device = base_layer.weight.device
        self.router = nn.Linear(base_layer.in_features, experts, bias=False, device=device, dtype=torch.float32)
        self.lora_A = nn.Parameter(torch.empty(experts * rank, base_layer.in_features, device=device,
                                               dtype=torch.float32))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, experts * rank, device=device,
                                               dtype=torch.float32))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # PEFT's LoRA init; B = 0: starts as W
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """[..., E] float32 routing weights of every token of `x`, each row summing to 1."""
        logits = F.linear(x.to(self.router.weight.dtype), self.router.weight).float()
        if 0 < self.top_k < self.experts:
            kept, index = logits.topk(self.top_k, dim=-1)
            logits = torch.full_like(logits, float("-inf")).scatter(-1, index, kept)
        return torch.softmax(logits, dim=-1)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self.base_layer(x, *args, **kwargs)
        gates = self.gates(x).repeat_interleave(self.rank, dim=-1)  # one gate per rank row of its expert
        h = F.linear(self.dropout(x).to(self.lora_A.dtype), self.lora_A)
        delta = F.linear(h * gates.to(h.dtype), self.lora_B) * self.scale
        return out + delta.to(out.dtype)

    def trainable(self) -> list[nn.Parameter]:
        return [self.router.weight, self.lora_A, self.lora_B]


def target_paths(model: nn.Module, targets: list[str] | None) -> list[str]:
    """Paths of the language model's decoder linears that LoRA would target (see `lora_target_regex`)."""
    from ...modeling.models import lora_target_regex

    pattern = re.compile(lora_target_regex(model, targets))
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and pattern.fullmatch(n)]


def moe_modules(model: nn.Module) -> dict[str, MoELoraLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, MoELoraLinear)}


def wrap(model: nn.Module, config: MoEConfig) -> dict[str, MoELoraLinear]:
    """Replace each linear in `config.modules` of `model` with a fresh MoELoraLinear around it."""
    out = {}
    for path in config.modules:
        parent_path, _, leaf = path.rpartition(".")
        try:
            parent = model.get_submodule(parent_path) if parent_path else model
            linear = getattr(parent, leaf)
        except AttributeError:
            raise EngineError(f"the model has no module {path} to put MoELoRA experts on",
                              hint="load the stage on the base model it was trained on") from None
        if not isinstance(linear, nn.Linear):
            raise EngineError(f"{path} is a {type(linear).__name__}, not a linear layer MoELoRA can wrap")
        module = MoELoraLinear(linear, config.experts, config.rank_per_expert, config.top_k, config.scale,
                               config.dropout)
        module.train(linear.training)  # a new module is in training mode: keep an eval model's dropout off
        setattr(parent, leaf, module)
        out[path] = module
    return out


def save_state(model: nn.Module, config: MoEConfig, stage_dir: str | Path, base: str) -> dict[str, str]:
    """Write `stage_dir/moelora/`; returns {path relative to stage_dir: sha256}."""
    from safetensors.torch import save_file

    modules = moe_modules(model)
    if sorted(modules) != sorted(config.modules):
        raise EngineError("the model's MoELoRA modules are not the ones its config lists")
    final = Path(stage_dir) / STATE_DIR
    stage = staging_dir(final)
    try:
        tensors = {}
        for path in config.modules:
            m = modules[path]
            for key, value in (("router", m.router.weight), ("lora_A", m.lora_A), ("lora_B", m.lora_B)):
                tensors[f"{path}.{key}"] = value.detach().to("cpu", torch.float32).contiguous()
        save_file(tensors, stage / WEIGHTS_FILE, metadata={"format": "hicl-moelora"})
        atomic_write_json(stage / CONFIG_FILE, {"format": FORMAT, **asdict(config), "base": base,
                                                "forward": "W x + scale * sum_e softmax(router x)_e B_e A_e x"})
        hashes = {f"{STATE_DIR}/{p.name}": sha256_file(p) for p in sorted(stage.iterdir()) if p.is_file()}
        publish_dir(stage, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return hashes


def read_config(stage_dir: str | Path) -> MoEConfig:
    path = Path(stage_dir) / STATE_DIR / CONFIG_FILE
    if not path.is_file():
        raise EngineError(f"no MoELoRA state in {path.parent} ({CONFIG_FILE} missing)",
                          hint="the stage must finish with method moelora before it can be loaded")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("format") != FORMAT:
            raise ValueError(f"format {raw.get('format')!r}, this hicl reads {FORMAT}")
        return MoEConfig(experts=int(raw["experts"]), rank_per_expert=int(raw["rank_per_expert"]),
                         top_k=int(raw["top_k"]), scale=float(raw["scale"]), dropout=float(raw["dropout"]),
                         modules=[str(m) for m in raw["modules"]])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EngineError(f"cannot read the MoELoRA config {path}: {type(exc).__name__}: {exc}") from None


@torch.no_grad()
def load_state(model: nn.Module, stage_dir: str | Path, config: MoEConfig | None = None) -> dict[str, MoELoraLinear]:
    """Wrap `model` as the saved stage's config says and copy its weights in."""
    from safetensors.torch import load_file

    config = config or read_config(stage_dir)
    path = Path(stage_dir) / STATE_DIR / WEIGHTS_FILE
    try:
        tensors = load_file(path)
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot read the MoELoRA weights {path}: {type(exc).__name__}: {exc}") from None
    modules = wrap(model, config)
    for name, m in modules.items():
        for key, param in (("router", m.router.weight), ("lora_A", m.lora_A), ("lora_B", m.lora_B)):
            value = tensors.get(f"{name}.{key}")
            if value is None or value.shape != param.shape:
                raise EngineError(f"{path} lacks {name}.{key} of shape {tuple(param.shape)}",
                                  hint="the state is incomplete or from another model; rerun the stage")
            param.copy_(value.to(param.device, param.dtype))
    return modules
