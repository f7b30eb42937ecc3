"""A HiDe stage's end and a finished stage's model: what `methods.hide` delegates to.

End of stage t: read the trained expert out of the PEFT model (with `expert_rank`, its best
rank-k approximation per module), compute the task's anchors with
the adapters off (a pass over its training prompts: the encoders are frozen, so this equals
the running mean during training), pick its probe samples, choose the expanded layers (from the
CKA between experts 1..t with expand=auto), and save everything with experts 1..t-1 from the
previous stage's state. Loading rebuilds the HiDe model on a plain base from that state alone.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ....core.taskfile import load_records
from ...analysis.probe import cka_by_layer, expert_features, low_similarity_layers, pick_probes
from ...errors import EngineError
from ...modeling.lora_factors import from_peft, truncate
from ...modeling.models import decoder_layers
from ..options import to_json
from .model import build, resolve_expand
from .options import HideOptions
from .routing import ClipEncoder, ModelEncoder, mean_features, template_token_ids
from .state import HideState, has_state, load_state, save_state


def load_processor(base: str) -> Any:
    """The base model's processor, with the pad-token fallback `models.load_base` applies."""
    from ...modeling.processors import load_processor as load

    try:
        processor = load(base)
    except Exception as exc:
        raise EngineError(f"cannot load the processor of {base}: {type(exc).__name__}: {exc}") from exc
    if processor.tokenizer.pad_token_id is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return processor


def make_encoder(encoder: dict[str, Any], processor: Any | None, device: torch.device, base: str = ""):
    """The routing encoder a state (or a stage about to save one) names."""
    if encoder["kind"] == "model":
        return ModelEncoder(encoder["excluded_ids"])
    if encoder["kind"] == "clip":
        if processor is None:
            processor = load_processor(base)
        return ClipEncoder(encoder["path"], processor, encoder["excluded_ids"], device)
    raise EngineError(f"unknown router encoder kind {encoder['kind']!r} in the HiDe state")


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    weight = model.get_input_embeddings().weight
    return weight.device, weight.dtype


def previous_state(prev_stage_dir: Path | None, stage_index: int) -> HideState | None:
    if stage_index == 0:
        return None
    if prev_stage_dir is None or not has_state(prev_stage_dir):
        raise EngineError(f"hide stage {stage_index + 1} needs the HiDe state of the previous stage "
                          f"({prev_stage_dir}/hide missing)", hint="run the stages in order, all with method hide")
    return load_state(prev_stage_dir)


def end_stage(model: nn.Module, spec, options: HideOptions) -> dict[str, str]:
    """Save `spec.stage_dir/hide/` for the PEFT model just trained; returns {relative path: sha256}."""
    if len(spec.train_tasks) != 1:
        raise EngineError(f"a hide stage trains exactly one task, this one has {len(spec.train_tasks)}")
    task = spec.train_tasks[0]
    prev = previous_state(spec.prev_stage_dir, spec.stage_index)
    expert = from_peft(model, task.name)
    if options.expert_rank:
        expert = truncate(expert, options.expert_rank)
    experts = (prev.experts if prev else []) + [expert]
    if prev is not None and task.name in prev.tasks:
        raise EngineError(f"task {task.name!r} already has an expert in the previous stage's state")
    base = model.get_base_model()
    device, dtype = _device_dtype(base)
    processor = load_processor(spec.model.base)
    folder = options.router_encoder
    spec_encoder = {"kind": "clip" if folder else "model", "excluded_ids": template_token_ids(processor)}
    if folder:
        spec_encoder["path"] = str(Path(folder).expanduser().resolve())
    if prev is not None and (prev.encoder["kind"], prev.encoder.get("path")) != (spec_encoder["kind"], spec_encoder.get("path")):
        raise EngineError("router_encoder changed between stages; the anchors of earlier tasks would not compare",
                          hint="keep the same --router-encoder for the whole run")
    encoder = make_encoder(spec_encoder, processor, device)
    records = load_records(task.train_path)
    with model.disable_adapter():
        a_img, a_txt, _ = mean_features(encoder, base, processor, records, device, dtype)
    anchors_txt = torch.stack([*(prev.anchors_txt if prev else []), a_txt])
    anchors_img = None
    if a_img is not None and (prev is None or prev.anchors_img is not None):
        anchors_img = torch.stack([*(prev.anchors_img if prev else []), a_img])
    probes = {**(prev.probes if prev else {}),
              task.name: pick_probes(records, options.probe_samples, spec.train.seed, task.name)}
    n_layers = len(decoder_layers(base)[1])
    with model.disable_adapter():
        expanded, cka = choose_expanded(base, processor, experts, probes, options, n_layers, device, dtype)
    state = HideState(experts=experts, anchors_img=anchors_img, anchors_txt=anchors_txt, encoder=spec_encoder,
                      expanded_layers=expanded, n_layers=n_layers, probes=probes, cka=cka, base=spec.model.base,
                      options=to_json(options))
    return save_state(state, spec.stage_dir)


def measure_cka(base: nn.Module, processor: Any, experts: list, probes: dict[str, list[dict]], kernel: str,
                n_layers: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Mean cross-task CKA per layer between the experts' models on every task's probes."""
    all_probes = [r for e in experts for r in probes[e.name]]
    feats = expert_features(base, processor, experts, all_probes, list(range(n_layers)), device, dtype)
    by_layer = cka_by_layer(feats, kernel)
    mean = {str(k): None if math.isnan(v["mean_cross"]) else v["mean_cross"] for k, v in by_layer.items()}
    return {"kernel": kernel, "n_probe": len(all_probes), "mean_cross": mean}


def choose_expanded(base: nn.Module, processor: Any, experts: list, probes: dict[str, list[dict]],
                    options: HideOptions, n_layers: int, device: torch.device, dtype: torch.dtype,
                    cka: dict[str, Any] | None = None) -> tuple[list[int], dict[str, Any] | None]:
    """(expanded layers, CKA summary) for `options.expand`; `auto` measures CKA unless `cka`
    already holds it for the same kernel. With one task there is nothing to compare: the top layer."""
    expanded = resolve_expand(options.expand, n_layers)
    if expanded is not None:
        return expanded, cka
    if len(experts) < 2:
        return [n_layers - 1], cka
    if cka is None or cka.get("kernel") != options.cka_kernel:
        cka = measure_cka(base, processor, experts, probes, options.cka_kernel, n_layers, device, dtype)
    mean = {int(k): {"mean_cross": v} for k, v in cka["mean_cross"].items()}
    return low_similarity_layers(mean, options.cka_threshold), cka


def load_model(base: nn.Module, stage_dir: str | Path, options: HideOptions) -> nn.Module:
    """The HiDe model of a finished stage, built in place on the plain `base`.

    The options decide fusion, tau and the expanded layers, so one stage can be served in every
    configuration; `expand=auto` reuses the CKA measured at the end of the stage when there is one.
    """
    state = load_state(stage_dir)
    device, dtype = _device_dtype(base)
    base_path = getattr(base, "name_or_path", "") or state.base
    processor = load_processor(base_path) if state.encoder["kind"] == "clip" or options.expand == "auto" else None
    expanded, _ = choose_expanded(base, processor, state.experts, state.probes, options, state.n_layers, device, dtype,
                                  state.cka)
    encoder = make_encoder(state.encoder, processor, device, base_path)
    return build(base, state.experts, state.anchors_img, state.anchors_txt, encoder, expanded,
                 tau=options.tau, fusion=options.fusion, merge_fused=options.merge_fused,
                 ties_density=options.ties_density, routing=options.routing,
                 merge_top1=options.merge_top1)
