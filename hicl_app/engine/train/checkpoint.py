"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder `step-NNNNNNNN/` holding `state.safetensors` (trainable tensors and
the optimizer's per-parameter tensors) and `checkpoint.json` (step and data position, the
optimizer's scalars and param groups, Python/torch RNG states (of every rank, when several trained),
the stage fingerprint, and the sha256 of the tensor file). Folders are written under a staging name and renamed into place,
and the older checkpoint is removed only after the new one is durable, so there is always one
complete checkpoint on disk. A user's file is never unpickled: a tampered or truncated
checkpoint fails its hash and is refused with a clear error.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load, save as st_save

from ...core.fsio import atomic_write_bytes, atomic_write_json, publish_dir, staging_dir
from ..errors import EngineError

FORMAT = "hicl-checkpoint"
VERSION = 1
TENSORS = "state.safetensors"
MANIFEST = "checkpoint.json"
_PREFIX = "step-"


@dataclass
class TrainState:
    """Everything needed to continue a run exactly where it stopped."""

    step: int
    micro_batch: int
    total_steps: int
    params: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    fingerprint: dict[str, Any]
    #: each rank's RNG state, in rank order, when the stage ran on several ranks (else [rng])
    rng_ranks: list[dict[str, Any]]


def capture_rng() -> dict[str, Any]:
    """Python and torch RNG states as JSON (dropout masks depend on the torch one)."""
    version, state, gauss = random.getstate()
    rng: dict[str, Any] = {
        "python": [version, list(state), gauss],
        "torch": base64.b64encode(bytes(torch.get_rng_state().tolist())).decode("ascii"),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = [base64.b64encode(bytes(s.tolist())).decode("ascii") for s in torch.cuda.get_rng_state_all()]
    return rng


def restore_rng(rng: dict[str, Any]) -> None:
    version, state, gauss = rng["python"]
    random.setstate((version, tuple(state), gauss))
    torch.set_rng_state(_bytes_tensor(rng["torch"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_bytes_tensor(s) for s in rng["cuda"]])


def _bytes_tensor(b64: str) -> torch.Tensor:
    return torch.tensor(list(base64.b64decode(b64)), dtype=torch.uint8)


def _flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able structure."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state_dict["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], structure: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, values in structure["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in structure["param_groups"]]
    return {"state": state, "param_groups": groups}


def _payload_hash(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def save_checkpoint(ckpt_dir: str | os.PathLike, *, step: int, micro_batch: int, total_steps: int,
                    params: dict[str, torch.Tensor], optimizer_state: dict, fingerprint: dict[str, Any],
                    rng_ranks: list[dict[str, Any]] | None = None) -> Path:
    """Write checkpoint `step` atomically, then drop older ones. Returns its folder.

    `rng_ranks` are the RNG states of every rank (rank 0's first); this process's own by default.
    """
    ckpt_dir = Path(ckpt_dir)
    final = ckpt_dir / f"{_PREFIX}{step:08d}"
    opt_tensors, opt_structure = _flatten_optimizer(optimizer_state)
    tensors = {f"param.{n}": t.detach().to("cpu").contiguous() for n, t in params.items()}
    tensors.update(opt_tensors)
    blob = st_save(tensors)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "step": step,
        "micro_batch": micro_batch,
        "total_steps": total_steps,
        "param_names": list(params),
        "optimizer": opt_structure,
        "rng": rng_ranks[0] if rng_ranks else capture_rng(),
        **({"rng_ranks": rng_ranks} if rng_ranks and len(rng_ranks) > 1 else {}),
        "fingerprint": fingerprint,
        "tensors_file": TENSORS,
        "tensors_sha256": hashlib.sha256(blob).hexdigest(),
        "written_at": time.time(),
    }
    manifest["manifest_sha256"] = _payload_hash(manifest)
    stage = staging_dir(final)
    try:
        atomic_write_bytes(stage / TENSORS, blob)
        atomic_write_json(stage / MANIFEST, manifest)
        publish_dir(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    for older in _checkpoint_dirs(ckpt_dir):
        if older != final:
            shutil.rmtree(older, ignore_errors=True)
    return final


def _checkpoint_dirs(ckpt_dir: Path) -> list[Path]:
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith(_PREFIX))


def latest_checkpoint(ckpt_dir: str | os.PathLike | None) -> Path | None:
    """The newest published checkpoint folder (staging leftovers are ignored), if any."""
    if ckpt_dir is None:
        return None
    dirs = _checkpoint_dirs(Path(ckpt_dir))
    return dirs[-1] if dirs else None


def load_checkpoint(path: str | os.PathLike, fingerprint: dict[str, Any]) -> TrainState:
    """Read and verify a checkpoint; EngineError if corrupt or made for another stage."""
    path = Path(path)
    hint = f"delete {path} to restart this stage from its beginning"
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EngineError(f"checkpoint {path} is unreadable: {exc}", hint=hint) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise EngineError(f"{path} is not a hicl checkpoint", hint=hint)
    if manifest.get("version") != VERSION:
        raise EngineError(f"checkpoint {path} has format version {manifest.get('version')}, expected {VERSION}",
                          hint=hint)
    if manifest.get("manifest_sha256") != _payload_hash(manifest):
        raise EngineError(f"checkpoint {path} is corrupt: {MANIFEST} fails its checksum", hint=hint)
    try:
        blob = (path / manifest["tensors_file"]).read_bytes()
    except OSError as exc:
        raise EngineError(f"checkpoint {path} is incomplete: {exc}", hint=hint) from None
    if hashlib.sha256(blob).hexdigest() != manifest["tensors_sha256"]:
        raise EngineError(f"checkpoint {path} is corrupt: {TENSORS} does not match its sha256", hint=hint)
    if manifest["fingerprint"] != fingerprint:
        changed = sorted(k for k in set(fingerprint) | set(manifest["fingerprint"])
                         if fingerprint.get(k) != manifest["fingerprint"].get(k))
        raise EngineError(f"checkpoint {path} was made for a different stage setup (changed: {', '.join(changed)})",
                          hint=hint)
    tensors = st_load(blob)
    params = {n: tensors[f"param.{n}"] for n in manifest["param_names"]}
    return TrainState(step=manifest["step"], micro_batch=manifest["micro_batch"],
                      total_steps=manifest["total_steps"], params=params,
                      optimizer=_unflatten_optimizer(tensors, manifest["optimizer"]),
                      rng=manifest["rng"], fingerprint=manifest["fingerprint"],
                      rng_ranks=manifest.get("rng_ranks") or [manifest["rng"]])
