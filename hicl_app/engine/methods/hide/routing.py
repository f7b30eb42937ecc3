"""Dual-modality routing: which task experts answer a sample, from its image and instruction.

w = softmax(((cos(f_img, a_img[t]) + cos(f_txt, a_txt[t])) / 2) / τ) over the tasks t seen so far,
a_img / a_txt being each task's mean training features (its anchors). A sample without an image
is routed on its instruction alone.

Encoders (both frozen, so a task's anchors are exactly the mean over its training samples):
- `ModelEncoder` (default, needs nothing extra): the model's own image features (vision tower +
  projector, what the language model sees) mean-pooled over patches, and the input embeddings of
  the instruction mean-pooled; instruction = the prompt's tokens minus image, padding and the
  chat template's own tokens.
- `ClipEncoder`: a CLIP-style dual encoder folder (image and text features, the official choice);
  its inputs are recovered from the prompt tensors (the instruction decoded from its tokens,
  the image de-normalised from pixel_values), so it routes anything the model is given.

Everything works from the tensors the model receives, so the anchors (computed from collated
prompts at the end of a stage) and the routing at inference see identical features.
`RoutingHook` computes the weights once per sample at prefill and leaves them for the
KV-cache decoding steps; `routed_generate` routes a `generate` call once, on its raw inputs.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...data.encoding import select_samples
from ...errors import EngineError
from .experts import RoutingState

#: batch entries that are never image inputs (the rest are handed to get_image_features if it names them)
NOT_IMAGE_KWARGS = frozenset({"input_ids", "attention_mask", "labels", "pixel_values", "token_type_ids",
                              "mm_token_type_ids", "position_ids", "cache", "past_key_values", "use_cache",
                              "return_dict", "inputs_embeds"})


def image_kwargs(getter: Any, kwargs: dict) -> dict:
    """The entries of `kwargs` that `getter` (a get_image_features) takes by name, besides the pixels:
    vision_feature_layer / image_sizes for LLaVA-style models, image_grid_thw for Qwen2-VL,
    pixel_attention_mask for Idefics3, image_sizes / batch_num_images for LLaVA-OneVision."""
    try:
        params = inspect.signature(getter).parameters
    except (TypeError, ValueError):
        return {}
    named = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in kwargs.items() if k in named and k not in NOT_IMAGE_KWARGS and v is not None}


def image_token_id(model: nn.Module) -> int | None:
    """The id of the token the image features replace in the model's input (None if it has none)."""
    config = getattr(model, "config", None)
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def template_token_ids(processor: Any) -> list[int]:
    """Ids that are chat template or special tokens, never the user's words (to leave out of f_txt)."""
    from ...data.encoding import Encoder

    enc = Encoder(processor)
    tok = processor.tokenizer
    first, _ = enc.segments({"question": "", "answer": "", "history": []}, with_answer=False)[0]
    ids = set(tok(first, add_special_tokens=True)["input_ids"])
    ids.update(i for i in (enc.image_token_id, tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) if i is not None)
    ids.update(getattr(tok, "all_special_ids", []) or [])
    return sorted(int(i) for i in ids)


def _instruction_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      excluded: torch.Tensor) -> torch.Tensor:
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    return mask & ~torch.isin(input_ids, excluded.to(input_ids.device))


def pooled_image_features(image_outputs: Any, input_ids: torch.Tensor, image_token: int | None) -> torch.Tensor:
    """Each sample's image features (what its image tokens become) mean-pooled: [batch, dim].

    The features of a batch come in the order of the image tokens they replace, whatever the
    family cuts them into (one tensor per image, per tile, or all in one), so each sample's
    share is the next `n` feature vectors, `n` its number of image tokens.
    """
    feats = getattr(image_outputs, "pooler_output", image_outputs)
    pieces = [feats] if isinstance(feats, torch.Tensor) else list(feats)
    batch = input_ids.shape[0]
    if image_token is None:  # no token to count: one entry per sample
        if len(pieces) == 1 and pieces[0].dim() == 3:
            pieces = list(pieces[0])
        if len(pieces) != batch:
            raise EngineError(f"hide routing expects one image per sample, got {len(pieces)} image(s) "
                              f"for {batch} sample(s)")
        return torch.stack([f.float().reshape(-1, f.shape[-1]).mean(0) for f in pieces])
    flat = torch.cat([f.reshape(-1, f.shape[-1]) for f in pieces])
    counts = (input_ids == image_token).sum(1).tolist()
    if sum(counts) != flat.shape[0] or not all(counts):
        raise EngineError(f"hide routing expects one image per sample: {flat.shape[0]} image feature(s) for "
                          f"image tokens {counts}")
    return torch.stack([f.float().mean(0) for f in flat.split(counts)])


class ModelEncoder:
    """The model's own frozen image features and instruction embeddings (adapters off)."""

    kind = "model"

    def __init__(self, excluded_ids: list[int]):
        self.excluded = torch.tensor(sorted(excluded_ids), dtype=torch.long)

    def image_outputs(self, model: nn.Module, pixel_values: torch.Tensor, kwargs: dict) -> Any:
        getter = getattr(model, "get_image_features", None)
        if not callable(getter):
            raise EngineError(f"{type(model).__name__} has no get_image_features for the default hide router",
                              hint="pass --router-encoder with a CLIP-style dual encoder folder")
        return getter(pixel_values=pixel_values, return_dict=True, **image_kwargs(getter, kwargs))

    @torch.no_grad()
    def features(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 pixel_values: torch.Tensor | None, image_outputs: Any = None,
                 kwargs: dict | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
        f_img = None
        if pixel_values is not None or image_outputs is not None:
            if image_outputs is None:
                image_outputs = self.image_outputs(model, pixel_values, kwargs or {})
            f_img = pooled_image_features(image_outputs, input_ids, image_token_id(model))
        emb = model.get_input_embeddings()(input_ids).float()
        mask = _instruction_mask(input_ids, attention_mask, self.excluded).unsqueeze(-1).float()
        f_txt = (emb * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return f_img, f_txt


class ClipEncoder:
    """A CLIP-style dual encoder (transformers AutoModel + AutoProcessor folder)."""

    kind = "clip"

    def __init__(self, folder: str, lm_processor: Any, excluded_ids: list[int], device: torch.device):
        from transformers import AutoModel, AutoProcessor

        try:
            self.processor = AutoProcessor.from_pretrained(folder)
            self.model = AutoModel.from_pretrained(folder).to(device).eval()
        except Exception as exc:
            raise EngineError(f"cannot load the router encoder from {folder}: {type(exc).__name__}: {exc}",
                              hint="pass a folder saved with save_pretrained of a CLIP-style model and its processor") from exc
        if not all(callable(getattr(self.model, n, None)) for n in ("get_image_features", "get_text_features")):
            raise EngineError(f"the router encoder in {folder} ({type(self.model).__name__}) is not a dual encoder",
                              hint="it needs get_image_features and get_text_features, as CLIPModel has")
        self.folder = folder
        self.lm_tokenizer = lm_processor.tokenizer
        image_proc = getattr(lm_processor, "image_processor", None)
        self.mean = torch.tensor(getattr(image_proc, "image_mean", None) or [0.0, 0.0, 0.0]).view(1, -1, 1, 1)
        self.std = torch.tensor(getattr(image_proc, "image_std", None) or [1.0, 1.0, 1.0]).view(1, -1, 1, 1)
        self.normalised = bool(getattr(image_proc, "do_normalize", False))
        self.excluded = torch.tensor(sorted(excluded_ids), dtype=torch.long)

    def _images(self, pixel_values: torch.Tensor) -> list:
        from PIL import Image

        if pixel_values.dim() != 4:
            raise EngineError(f"the CLIP router encoder needs one (channels, height, width) image per sample; this "
                              f"model's pixel values are {tuple(pixel_values.shape)} (tiles or flattened patches)",
                              hint="leave --router-encoder unset to route on the model's own vision features")
        x = pixel_values.detach().float().cpu()
        if self.normalised:
            x = x * self.std + self.mean
        arr = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return [Image.fromarray(a) for a in arr]

    def texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> list[str]:
        mask = _instruction_mask(input_ids, attention_mask, self.excluded)
        return [self.lm_tokenizer.decode(row[m].tolist(), skip_special_tokens=True).strip()
                for row, m in zip(input_ids.cpu(), mask.cpu())]

    @torch.no_grad()
    def features(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 pixel_values: torch.Tensor | None, image_outputs: Any = None,
                 kwargs: dict | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
        device = next(self.model.parameters()).device
        text_in = self.processor.tokenizer(self.texts(input_ids, attention_mask), padding=True, truncation=True,
                                           max_length=77, return_tensors="pt").to(device)
        out = self.model.get_text_features(**text_in)
        f_txt = getattr(out, "pooler_output", out).float()
        f_img = None
        if pixel_values is not None:
            image_in = self.processor.image_processor(images=self._images(pixel_values), return_tensors="pt")
            out = self.model.get_image_features(pixel_values=image_in["pixel_values"].to(device))
            f_img = getattr(out, "pooler_output", out).float()
        return f_img, f_txt


def route(f_img: torch.Tensor | None, f_txt: torch.Tensor, a_img: torch.Tensor | None, a_txt: torch.Tensor,
          tau: float) -> torch.Tensor:
    """Per-sample expert weights [batch, tasks] = softmax(s / τ)."""
    s = F.cosine_similarity(f_txt.float()[:, None, :], a_txt.float().to(f_txt.device)[None], dim=-1)
    if f_img is not None and a_img is not None:
        s_img = F.cosine_similarity(f_img.float()[:, None, :], a_img.float().to(f_img.device)[None], dim=-1)
        s = (s + s_img) / 2
    return torch.softmax(s / tau, dim=-1)


def _cache_of(kwargs: dict) -> Any:
    """The KV cache a forward was given (`cache` in transformers >= 5.24, `past_key_values` before)."""
    cache = kwargs.get("cache")
    return cache if cache is not None else kwargs.get("past_key_values")


def _cache_length(past: Any) -> int:
    if past is None:
        return 0
    getter = getattr(past, "get_seq_length", None)
    if callable(getter):
        return int(getter())
    try:  # legacy tuple cache
        return int(past[0][0].shape[-2])
    except (TypeError, IndexError, AttributeError):
        return 0


@dataclass
class RoutingHook:
    """Forward pre-hook of the whole model: route every sample at prefill, keep it while decoding.

    With the default encoder and a model whose forward accepts pre-encoded images
    (`mm_encoder_outputs`), the image features it computes are handed to the forward, so the
    vision tower runs once per prompt as without routing.
    """

    encoder: Any
    a_img: torch.Tensor | None
    a_txt: torch.Tensor
    tau: float
    state: RoutingState
    reuse_image: bool = False
    #: set while `routed_generate` has routed the call's raw inputs; the forwards inside keep them
    pinned: bool = False

    @classmethod
    def for_model(cls, model: nn.Module, encoder: Any, a_img, a_txt, tau: float, state: RoutingState) -> "RoutingHook":
        reuse = (isinstance(encoder, ModelEncoder)
                 and "mm_encoder_outputs" in inspect.signature(type(model).forward).parameters)
        return cls(encoder, a_img, a_txt, tau, state, reuse)

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        pixel_values = kwargs.get("pixel_values")
        encoded = kwargs.get("mm_encoder_outputs")
        # `generate` in transformers >= 5.24 encodes the images before the loop and hands them over
        # as mm_encoder_outputs (no pixel_values), and calls the KV cache `cache`, not past_key_values
        image_outputs = encoded.get("image") if isinstance(encoded, dict) else None
        if pixel_values is None and image_outputs is None and _cache_length(_cache_of(kwargs)) > 0:
            return None  # a decoding step: the prefill's weights stay
        if self.pinned or self.state.fixed is not None:
            return None
        if pixel_values is not None and self.reuse_image and image_outputs is None:
            image_outputs = self.encoder.image_outputs(module, pixel_values, kwargs)
            kwargs = {k: v for k, v in kwargs.items() if k != "pixel_values"}
            kwargs["mm_encoder_outputs"] = {"image": image_outputs}
        self.route_inputs(module, input_ids, pixel_values, image_outputs, kwargs)
        return args, kwargs

    def route_inputs(self, module: nn.Module, input_ids: torch.Tensor | None, pixel_values: torch.Tensor | None,
                     image_outputs: Any, kwargs: dict) -> None:
        """Set the per-sample weights of the batch from its prompt tokens and image."""
        if input_ids is None:
            raise EngineError("the hide model routes on input_ids; it was called without them",
                              hint="pass input_ids (not inputs_embeds)")
        f_img, f_txt = self.encoder.features(module, input_ids, kwargs.get("attention_mask"), pixel_values,
                                             image_outputs, kwargs)
        self.state.set(route(f_img, f_txt, self.a_img, self.a_txt, self.tau))


def routed_generate(model: nn.Module, router: RoutingHook):
    """`model.generate` that routes every sample once, on the raw prompt, before decoding.

    transformers >= 5.24 encodes the images before the first forward and gives the forwards no
    pixel_values, so a CLIP router could not see the image there; routing here works the same
    for every encoder and transformers version. With top-1 routing and merged experts, a batch
    that picks several experts is generated one expert's samples at a time, each with its expert
    merged (`_generate_by_expert`), so mixed traffic also costs what one merged LoRA costs."""
    original = model.generate

    @functools.wraps(original)
    def generate(*args, **kwargs):
        state = router.state
        if state.fixed is None:
            router.route_inputs(model, kwargs.get("input_ids", args[0] if args else None), kwargs.get("pixel_values"),
                                None, kwargs)
        router.pinned = True
        try:
            if (state.fixed is None and state.merger is not None and state.single is None and state.groups
                    and not args and not kwargs.get("return_dict_in_generate")):
                return _generate_by_expert(model, original, state, kwargs)
            return original(*args, **kwargs)
        finally:
            router.pinned = False

    return generate


def _generate_by_expert(model: nn.Module, original, state: RoutingState, kwargs: dict) -> torch.Tensor:
    """Generate each top-1 group of the batch on its own (its expert merged), rows back in place.

    Greedy decoding of a row does not depend on the other rows of its batch, so this gives
    what one call gives; shorter groups are right-padded with the pad id, as generate pads a
    finished row."""
    weights, groups = state.weights, state.groups
    batch = weights.shape[0]
    pad = kwargs.get("pad_token_id")
    if pad is None:
        pad = getattr(getattr(model, "generation_config", None), "pad_token_id", None) or 0
    pieces = []
    for _, rows in groups:
        sub = select_samples(kwargs, rows, batch)
        state.set(weights.index_select(0, rows))  # one expert: merged into the weights
        pieces.append((rows, original(**sub)))
    width = max(out.shape[1] for _, out in pieces)
    first = pieces[0][1]
    result = first.new_full((batch, width), pad)
    for rows, out in pieces:
        result[rows.to(result.device), :out.shape[1]] = out
    state.weights, state.groups, state.single = weights, groups, None  # the whole batch's routing, as routed
    return result


@torch.no_grad()
def mean_features(encoder: Any, model: nn.Module, processor: Any, records: list[dict], device: torch.device,
                  dtype: torch.dtype, batch_size: int = 16) -> tuple[torch.Tensor | None, torch.Tensor, int]:
    """(mean f_img, mean f_txt, n): a task's anchors, over the prompts of its training records."""
    from ...data.encoding import Encoder, collate

    enc = Encoder(processor, max_length=10**9)
    pad_id = processor.tokenizer.pad_token_id
    sum_img = sum_txt = None
    n = 0
    for start in range(0, len(records), batch_size):
        batch = collate([enc.encode(r, with_answer=False) for r in records[start:start + batch_size]], pad_id, "left")
        pv = batch.get("pixel_values")
        extra = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device)
                 for k, v in batch.items() if k not in NOT_IMAGE_KWARGS}
        f_img, f_txt = encoder.features(model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                        pv.to(device, dtype) if pv is not None else None, kwargs=extra)
        sum_txt = f_txt.sum(0) if sum_txt is None else sum_txt + f_txt.sum(0)
        if f_img is not None:
            sum_img = f_img.sum(0) if sum_img is None else sum_img + f_img.sum(0)
        n += f_txt.shape[0]
    if n == 0:
        raise EngineError("no training records to compute the task's routing anchors from")
    return (None if sum_img is None else (sum_img / n).cpu()), (sum_txt / n).cpu(), n
