"""A HiDe stage's state on disk: every task expert so far, the anchors and a JSON manifest.

Layout under the stage folder (beside the PEFT `adapter/` of the stage's own expert):

    hide/experts.safetensors   "<t>/<module path>/lora_A" [r, in], ".../lora_B" [out, r]
    hide/anchors.safetensors   "img" [T, d_img] (absent without images), "txt" [T, d_txt]
    hide/manifest.json         tasks, scales, encoder, expanded layers, probes, CKA summary

Only safetensors and JSON: nothing a user's file holds is ever unpickled. The folder is
written to a staging name and renamed into place, so a crash leaves the old state or the new.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ....core.fsio import atomic_write_json, publish_dir, sha256_file, staging_dir
from ...errors import EngineError
from ...modeling.lora_factors import Expert
from . import ANCHORS_FILE, EXPERTS_FILE, MANIFEST_FILE, STATE_DIR

FORMAT_VERSION = 1


@dataclass
class HideState:
    experts: list[Expert]
    anchors_img: torch.Tensor | None  # [T, d_img]
    anchors_txt: torch.Tensor  # [T, d_txt]
    encoder: dict[str, Any]  # {"kind": "model" | "clip", "excluded_ids": [...], "path": clip folder}
    expanded_layers: list[int]
    n_layers: int
    probes: dict[str, list[dict]] = field(default_factory=dict)
    cka: dict[str, Any] | None = None
    base: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def tasks(self) -> list[str]:
        return [e.name for e in self.experts]


def save_state(state: HideState, stage_dir: str | Path) -> dict[str, str]:
    """Write `stage_dir/hide/`; returns {path relative to stage_dir: sha256}."""
    from safetensors.torch import save_file

    final = Path(stage_dir) / STATE_DIR
    stage = staging_dir(final)
    try:
        tensors = {}
        for i, e in enumerate(state.experts):
            for path, (a, b) in e.factors.items():
                tensors[f"{i}/{path}/lora_A"] = a.detach().cpu().contiguous()
                tensors[f"{i}/{path}/lora_B"] = b.detach().cpu().contiguous()
        save_file(tensors, stage / EXPERTS_FILE)
        anchors = {"txt": state.anchors_txt.float().contiguous()}
        if state.anchors_img is not None:
            anchors["img"] = state.anchors_img.float().contiguous()
        save_file(anchors, stage / ANCHORS_FILE)
        manifest = {
            "format": FORMAT_VERSION, "tasks": state.tasks, "base": state.base,
            "experts": [{"name": e.name, "scales": e.scales, "energy_kept": e.energy_kept} for e in state.experts],
            "encoder": state.encoder, "expanded_layers": state.expanded_layers, "n_layers": state.n_layers,
            "probes": state.probes, "cka": state.cka, "options": state.options,
        }
        atomic_write_json(stage / MANIFEST_FILE, manifest)
        hashes = {f"{STATE_DIR}/{p.name}": sha256_file(p) for p in sorted(stage.iterdir()) if p.is_file()}
        publish_dir(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return hashes


def has_state(stage_dir: str | Path) -> bool:
    return (Path(stage_dir) / STATE_DIR / MANIFEST_FILE).is_file()


def load_state(stage_dir: str | Path) -> HideState:
    from safetensors.torch import load_file

    folder = Path(stage_dir) / STATE_DIR
    if not (folder / MANIFEST_FILE).is_file():
        raise EngineError(f"no HiDe state in {folder} ({MANIFEST_FILE} missing)",
                          hint="the stage must finish with method hide before it can be loaded")
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        tensors = load_file(folder / EXPERTS_FILE)
        anchors = load_file(folder / ANCHORS_FILE)
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot read the HiDe state in {folder}: {type(exc).__name__}: {exc}") from exc
    if manifest.get("format") != FORMAT_VERSION:
        raise EngineError(f"HiDe state in {folder} has format {manifest.get('format')!r}, this hicl reads {FORMAT_VERSION}")
    experts = []
    for i, entry in enumerate(manifest["experts"]):
        factors = {}
        for path in entry["scales"]:
            try:
                factors[path] = (tensors[f"{i}/{path}/lora_A"], tensors[f"{i}/{path}/lora_B"])
            except KeyError:
                raise EngineError(f"{folder / EXPERTS_FILE} lacks the factors of {path} for task {entry['name']!r}",
                                  hint="the state is incomplete; rerun the stage") from None
        experts.append(Expert(name=entry["name"], factors=factors, scales={k: float(v) for k, v in entry["scales"].items()},
                              energy_kept=float(entry.get("energy_kept", 1.0))))
    return HideState(experts=experts, anchors_img=anchors.get("img"), anchors_txt=anchors["txt"],
                     encoder=manifest["encoder"], expanded_layers=list(manifest["expanded_layers"]),
                     n_layers=int(manifest["n_layers"]), probes=manifest.get("probes", {}), cka=manifest.get("cka"),
                     base=manifest.get("base", ""), options=manifest.get("options", {}))
