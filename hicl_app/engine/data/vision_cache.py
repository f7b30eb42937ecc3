"""Frozen vision features computed once per image and reused across epochs and evaluations.

With LoRA on the language model the vision tower never changes, yet a plain training loop runs
it again on every image of every epoch, and evaluation runs it once more. While the cache is in
use, the model's `get_image_features` (which both `forward` and `generate` call) is replaced by
a version that looks each image up by the bytes of its pixel values, runs the tower only on the
images it has not seen, and applies the projector to the stored features. The features are
stored *before* the projector, which some methods train, so gradients still reach it.

The cache only engages where it cannot change a result: the model's image features are
LLaVA's own `get_image_features` (each image's tower output, selected, then projected: a
function of that image alone), the tower has no trainable parameter, no LoRA layer and no
dropout, and the call is the plain one (`image_sizes` None, no extra outputs asked for).
Anything else goes to the original method: families whose features depend on more than the
pixels of one fixed-size image (LLaVA-OneVision's tiles with `image_sizes`, Qwen2-VL's variable
patches with `image_grid_thw`, Idefics3's tiles with `pixel_attention_mask`) never use it.
The store is dropped whenever the tower's parameters change (an in-place update, a move to
another device, new modules), and is bounded in bytes.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

#: bytes of stored features per model; past it, new images are computed but not stored
MAX_BYTES = 2 << 30
_STORE_ATTR = "_hicl_vision_features"
#: keywords that leave the image features as they are (transformers >= 5.24 hands the forward's
#: use_cache on to get_image_features); any other keeps the call uncached
_PLAIN_KWARGS = frozenset({"return_dict", "use_cache"})


def _owner(model: nn.Module) -> nn.Module | None:
    """The module whose `get_image_features` is LLaVA's tower + projector (LlavaModel), if any."""
    from transformers import LlavaModel

    for module in model.modules():
        if isinstance(module, LlavaModel) and type(module).get_image_features is LlavaModel.get_image_features:
            return module
    return None


def _has_dropout(tower: nn.Module) -> bool:
    if any(isinstance(m, nn.Dropout) and m.p > 0 for m in tower.modules()):
        return True
    settings = getattr(getattr(tower, "config", None), "__dict__", {})
    return any(isinstance(v, float) and v > 0 for k, v in settings.items() if "dropout" in k)


def _frozen(tower: nn.Module) -> bool:
    """True when the tower's output is a pure function of its input, now and while unchanged."""
    if any(p.requires_grad for p in tower.parameters()):
        return False
    return not any(".lora_" in f".{name}" for name, _ in tower.named_modules()) and not _has_dropout(tower)


def _weights_id(tower: nn.Module) -> tuple:
    """Changes whenever a parameter is replaced, moved or updated in place."""
    return tuple((id(p), p.data_ptr(), p._version, p.dtype) for p in tower.parameters())


class FeatureStore:
    """Pre-projector features of single images, keyed by pixel content."""

    def __init__(self, max_bytes: int = MAX_BYTES):
        self.max_bytes = max_bytes
        self.features: dict[tuple, torch.Tensor] = {}
        self.nbytes = 0
        self.weights: tuple | None = None
        self.hits = 0
        self.misses = 0

    def check(self, tower: nn.Module) -> None:
        weights = _weights_id(tower)
        if weights != self.weights:
            self.features.clear()
            self.nbytes = 0
            self.weights = weights

    def put(self, key: tuple, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if self.nbytes + size <= self.max_bytes:
            self.features[key] = value
            self.nbytes += size


def _image_keys(pixel_values: torch.Tensor, extra: tuple) -> list[tuple]:
    host = pixel_values.detach().to("cpu").contiguous()
    flat = host.reshape(host.shape[0], -1).view(torch.uint8)
    return [(hashlib.blake2b(row.numpy().tobytes(), digest_size=20).digest(), tuple(host.shape[1:]),
             str(host.dtype), extra) for row in flat]


def _cached_get_image_features(owner: nn.Module, original: Any, store: FeatureStore):
    signature = inspect.signature(original)

    @functools.wraps(original)
    def get_image_features(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs).arguments
        except TypeError:
            return original(*args, **kwargs)
        extra = dict(bound.pop("kwargs", {}))
        pixel_values = bound.get("pixel_values")
        vision_feature_layer = bound.get("vision_feature_layer")
        vision_feature_select_strategy = bound.get("vision_feature_select_strategy")
        plain = (bound.get("image_sizes") is None and set(extra) <= _PLAIN_KWARGS and extra.get("return_dict", True))
        tower = owner.vision_tower
        if not plain or not isinstance(pixel_values, torch.Tensor) or not _frozen(tower):
            return original(*args, **kwargs)
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        store.check(tower)
        keys = _image_keys(pixel_values, (vision_feature_layer, vision_feature_select_strategy))
        found = {k: store.features[k] for k in keys if k in store.features}
        missing = [i for i, k in enumerate(keys) if k not in found]
        store.hits += len(keys) - len(missing)
        store.misses += len(missing)
        if missing:
            captured: list[torch.Tensor] = []
            hook = owner.multi_modal_projector.register_forward_pre_hook(
                lambda module, args: captured.append(args[0].detach()))
            try:
                with torch.no_grad():
                    original(pixel_values[missing], vision_feature_layer=vision_feature_layer,
                             vision_feature_select_strategy=vision_feature_select_strategy, return_dict=True)
            finally:
                hook.remove()
            for i, feature in zip(missing, captured[0]):
                found[keys[i]] = feature.clone()
                store.put(keys[i], found[keys[i]])
        projected = owner.multi_modal_projector(torch.stack([found[k] for k in keys]))
        return BaseModelOutputWithPooling(pooler_output=list(projected))

    return get_image_features


def feature_store(model: nn.Module) -> FeatureStore | None:
    """The store kept on `model` (None if the cache never engaged on it)."""
    owner = _owner(model)
    return getattr(owner, _STORE_ATTR, None) if owner is not None else None


@contextmanager
def vision_feature_cache(model: nn.Module, enabled: bool = True) -> Iterator[FeatureStore | None]:
    """Within the block, image features of `model` come from (and go to) its feature store.

    Yields the store, or None when the cache is off or the model is not a supported family.
    The store stays attached to the model afterwards, so training and a later evaluation of
    the same model share it. Nested use is a no-op.
    """
    owner = _owner(model) if enabled else None
    if owner is None or "get_image_features" in vars(owner):
        yield getattr(owner, _STORE_ATTR, None) if owner is not None else None
        return
    store = getattr(owner, _STORE_ATTR, None)
    if store is None:
        store = FeatureStore()
        setattr(owner, _STORE_ATTR, store)
    owner.get_image_features = _cached_get_image_features(owner, owner.get_image_features, store)
    try:
        yield store
    finally:
        del owner.get_image_features
