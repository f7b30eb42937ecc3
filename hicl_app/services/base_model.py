"""Find the base model a run names before anything is queued: a local folder, the Hugging Face
cache, or a hub that answers within a few seconds; and how big it is, for the run's defaults.

A run whose base cannot be loaded would otherwise be recorded, claimed by a worker and fail
minutes later after the download's retries; here it fails at once with what to do.

The size is the parameter count read from the safetensors headers (the 8-byte length and the
JSON header at the start of each file): reading them needs no tensor library, where safetensors'
own `safe_open` would import one. For a model only on the hub it is the hub's own count.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import InvalidInput

#: seconds to wait for the hub's answer about a model that is not in the local cache
HUB_TIMEOUT = 8.0


@dataclass(frozen=True)
class BaseModel:
    #: what the run records: an absolute folder, or the hub id
    ref: str
    #: "folder", "cache" or "hub"
    where: str
    #: parameters, None when unknown (weights not downloaded, no safetensors)
    params: int | None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def safetensors_params(folder: Path) -> int | None:
    """Parameters in the *.safetensors files of `folder` (headers only), None when there are none."""
    total, found = 0, False
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with open(path, "rb") as fh:
                (length,) = struct.unpack("<Q", fh.read(8))
                if length > 100_000_000:
                    continue
                header = json.loads(fh.read(length))
        except (OSError, ValueError, struct.error):
            continue
        found = True
        for name, entry in header.items():
            if name != "__metadata__" and isinstance(entry, dict):
                n = 1
                for dim in entry.get("shape", []):
                    n *= int(dim)
                total += n
    return total if found else None


def _looks_like_hub_id(base: str) -> bool:
    parts = base.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not base.startswith((".", "~")) and " " not in base


def resolve_base(base: str, *, timeout: float = HUB_TIMEOUT) -> BaseModel:
    """The base model `base` names, or InvalidInput saying why it cannot be used.

    A folder must hold a config.json. A hub id is taken from the local Hugging Face cache when
    its config.json is there; otherwise, unless HF_HUB_OFFLINE is set, the hub (HF_ENDPOINT, else
    huggingface.co) is asked once, with `timeout` seconds to answer.
    """
    base = (base or "").strip()
    if not base:
        raise InvalidInput("--base is empty", hint="pass a local model folder or a hub id such as llava-hf/llava-1.5-7b-hf")
    path = Path(base).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise InvalidInput(f"base model folder {path} has no config.json",
                               hint="pass a folder saved with save_pretrained, or a hub id")
        return BaseModel(str(path.resolve()), "folder", safetensors_params(path))
    if not _looks_like_hub_id(base):
        raise InvalidInput(f"base model {base!r} is neither an existing folder nor a hub id",
                           hint="pass a local model folder or a hub id such as llava-hf/llava-1.5-7b-hf")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(base, "config.json", cache_dir=os.environ.get("HF_HUB_CACHE") or None)
    if isinstance(cached, str):
        return BaseModel(base, "cache", safetensors_params(Path(cached).parent))
    if _offline():
        raise InvalidInput(f"base model {base!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set",
                           hint=f"download it first (`hf download {base}`) or unset HF_HUB_OFFLINE")
    return _ask_hub(base, timeout)


def _ask_hub(base: str, timeout: float) -> BaseModel:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    endpoint = os.environ.get("HF_ENDPOINT") or None
    where = endpoint or "huggingface.co"
    try:
        info = HfApi(endpoint=endpoint).model_info(base, timeout=timeout)
    except GatedRepoError:
        raise InvalidInput(f"base model {base!r} is gated on {where} and this machine has no access to it",
                           hint="accept its terms on the hub and log in (`hf auth login`), or pass a local folder") from None
    except RepositoryNotFoundError:
        raise InvalidInput(f"base model {base!r}: no such model on {where} (or it is private)",
                           hint="check the id, log in for a private model, or pass a local folder") from None
    except HfHubHTTPError as exc:
        raise InvalidInput(f"base model {base!r}: {where} answered {exc}",
                           hint="try again later, or download it and pass the folder") from None
    except Exception as exc:  # connection refused, DNS, timeout, offline mode: the hub is out of reach
        raise InvalidInput(f"base model {base!r} is not in the local cache and {where} cannot be reached "
                           f"({type(exc).__name__})",
                           hint=f"connect to the network, download it first (`hf download {base}`), "
                                "or pass a local model folder") from None
    params = getattr(getattr(info, "safetensors", None), "total", None)
    return BaseModel(base, "hub", int(params) if params else None)
