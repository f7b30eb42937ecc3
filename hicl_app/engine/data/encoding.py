"""Normalised records -> token ids, labels and image tensors, in the model's own prompt format.

The prompt comes from the processor's chat template (LLaVA-1.5-hf's "USER: <image>\\n{q}
ASSISTANT:" format when the processor has none), rendered turn by turn so every segment is known
to be prompt or answer. Prompt segments go through the processor (which expands the image
placeholder into the right number of image tokens), answers through the tokenizer; labels are
-100 everywhere except on answer tokens and the end-of-sequence token after each answer.
Training and generation share `Encoder.segments`, so the prompt the model learns to continue is
token for token the prompt it is asked to continue at evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from ..errors import EngineError

IGNORE_INDEX = -100

# The same rendering as llava-hf/llava-1.5-*-hf's chat template.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# Processor outputs aligned with the token sequence (padded like input_ids, zeros after the image).
_TEXT_ALIGNED = ("token_type_ids", "mm_token_type_ids")


@dataclass
class Encoded:
    """One sample: token ids, labels (same length), and the image tensors the model needs."""

    input_ids: list[int]
    labels: list[int]
    image_inputs: dict[str, torch.Tensor]
    text_aligned: dict[str, list[int]] = field(default_factory=dict)


def load_image(path: str) -> Image.Image:
    """Open as RGB (palette, alpha and greyscale images all become 3-channel)."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot open image {path}: {exc}", hint="re-add the task after fixing the file") from None


class Encoder:
    """Builds training and prompt-only encodings for one processor."""

    def __init__(self, processor: Any, max_length: int = 512):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_length = max_length
        template = getattr(processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)
        if template is None:
            image_token = getattr(processor, "image_token", "<image>")
            template = LLAVA_CHAT_TEMPLATE.replace("<image>", image_token)
        self.template = template
        self.eos_id = self.tokenizer.eos_token_id
        self.eos_text = self.tokenizer.eos_token
        self.image_token_id = getattr(processor, "image_token_id", None)

    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        return self.processor.apply_chat_template(messages, chat_template=self.template, tokenize=False,
                                                  add_generation_prompt=generation_prompt)

    def segments(self, record: dict, with_answer: bool) -> list[tuple[str, bool]]:
        """(text, is_answer) pieces of the conversation; the first holds the image placeholder.

        Answers are right-stripped; the whitespace the template puts after them moves to the
        next prompt piece, so answer labels end on the answer's last token.
        """
        turns = [*record.get("history", []), [record["question"], record["answer"]]]
        messages: list[dict] = []
        pieces: list[tuple[str, bool]] = []
        rendered = ""
        for i, (question, answer) in enumerate(turns):
            content = ([{"type": "image"}] if i == 0 else []) + [{"type": "text", "text": question}]
            messages.append({"role": "user", "content": content})
            prompt = self._render(messages, True)
            if not prompt.startswith(rendered):
                raise EngineError("the chat template does not render a conversation incrementally; "
                                  "cannot tell prompt from answer tokens")
            pieces.append((prompt[len(rendered):], False))
            if i == len(turns) - 1 and not with_answer:
                break
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
            full = self._render(messages, False)
            if not full.startswith(prompt):
                raise EngineError("the chat template renders the prompt differently once an answer follows; "
                                  "cannot tell prompt from answer tokens")
            reply = full[len(prompt):].rstrip()
            pieces.append((reply, True))
            rendered = prompt + reply
        return pieces

    def length(self, record: dict) -> int:
        """Text tokens of the training encoding (image placeholder as one): for grouping by length.

        Cheaper than `encode` (no image is opened), and like `max_length` blind to image size.
        """
        pieces = self.segments(record, with_answer=True)
        n = sum(len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) for text, _ in pieces if text)
        return min(n + sum(is_answer for _, is_answer in pieces), self.max_length)

    def encode(self, record: dict, with_answer: bool = True) -> Encoded:
        """Token ids + labels for training (`with_answer`) or the bare prompt for generation.

        A prompt-only encoding keeps history answers as context and labels nothing.

        Training encodings are cut at `max_length` from the right (the image's tokens counting
        as one); a first prompt that alone exceeds it is an error, since cutting into the image
        tokens breaks the model.
        """
        pieces = self.segments(record, with_answer)
        first, _ = pieces[0]
        enc = self.processor(images=[load_image(record["image"])], text=[first], return_tensors="pt")
        ids = enc["input_ids"][0].tolist()
        labels = [IGNORE_INDEX] * len(ids)
        text_aligned = {k: enc[k][0].tolist() for k in _TEXT_ALIGNED if k in enc}
        image_inputs = {k: v for k, v in enc.items()
                        if k not in ("input_ids", "attention_mask") and k not in _TEXT_ALIGNED}
        for text, is_answer in pieces[1:]:
            piece = self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
            if is_answer and not text.endswith(self.eos_text):
                piece = piece + [self.eos_id]
            ids += piece
            labels += piece if is_answer and with_answer else [IGNORE_INDEX] * len(piece)
            for k in text_aligned:
                text_aligned[k] += [0] * len(piece)
        if self.image_token_id is not None:
            labels = [IGNORE_INDEX if t == self.image_token_id else lab for t, lab in zip(ids, labels)]
        # As in LLaVA, the image counts as one token: max_length=512 must fit 576 CLIP patches.
        n_image = sum(t == self.image_token_id for t in enc["input_ids"][0].tolist())
        limit = self.max_length + max(n_image - 1, 0)
        if with_answer and len(ids) > limit:
            if len(enc["input_ids"][0]) > limit:
                raise EngineError(f"sample {record.get('id')!r}: the first prompt alone is "
                                  f"{len(enc['input_ids'][0]) - max(n_image - 1, 0)} tokens (image as one), "
                                  f"over max_length={self.max_length}",
                                  hint="raise max_length in the training config")
            ids, labels = ids[:limit], labels[:limit]
            text_aligned = {k: v[:limit] for k, v in text_aligned.items()}
        return Encoded(ids, labels, image_inputs, text_aligned)


class EncodedCache:
    """Each sample's encoding, made once and reused every epoch, up to `max_bytes` of tensors.

    Encoding means decoding and resizing the image and rendering the template: as costly as a
    small model's training step, and the same every epoch.
    """

    def __init__(self, encoder: Encoder, records: list[dict], max_bytes: int = 2 << 30):
        self.encoder = encoder
        self.records = records
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.items: dict[int, Encoded] = {}

    def __getitem__(self, index: int) -> Encoded:
        item = self.items.get(index)
        if item is None:
            item = self.encoder.encode(self.records[index])
            size = 16 * len(item.input_ids) + sum(t.numel() * t.element_size() for t in item.image_inputs.values())
            if self.nbytes + size <= self.max_bytes:
                self.items[index] = item
                self.nbytes += size
        return item


def collate(items: list[Encoded], pad_id: int, padding_side: str) -> dict[str, torch.Tensor]:
    """Pad to the longest sample: right padding to train, left padding to generate."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be left or right, not {padding_side!r}")
    length = max(len(it.input_ids) for it in items)
    n = len(items)
    ids = torch.full((n, length), pad_id, dtype=torch.long)
    labels = torch.full((n, length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((n, length), dtype=torch.long)
    aligned = {k: torch.zeros((n, length), dtype=torch.long) for k in items[0].text_aligned}
    for i, it in enumerate(items):
        k = len(it.input_ids)
        span = slice(length - k, length) if padding_side == "left" else slice(0, k)
        ids[i, span] = torch.tensor(it.input_ids)
        labels[i, span] = torch.tensor(it.labels)
        mask[i, span] = 1
        for key, values in it.text_aligned.items():
            aligned[key][i, span] = torch.tensor(values)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, **aligned}
    for key in items[0].image_inputs:
        batch[key] = concat_image_inputs([it.image_inputs[key] for it in items], key)
    return batch


def concat_image_inputs(tensors: list[torch.Tensor], key: str) -> torch.Tensor:
    """One processor output of several samples as the processor gives it for them together.

    Every family puts its images one after another along dim 0: LLaVA's (1, C, H, W) images,
    Qwen2-VL's flattened patches of any count (with `image_grid_thw` saying which are whose).
    Where the rest differs, as LLaVA-OneVision's tiles (image_sizes tells the model how many
    are real) or Idefics3's tiles and `pixel_attention_mask` (all-zero tiles are dropped),
    the processors zero-pad every dimension to the largest, and so does this.
    """
    shapes = {tuple(t.shape[1:]) for t in tensors}
    if len(shapes) > 1:
        if len({t.dim() for t in tensors}) > 1:
            raise EngineError(f"cannot batch {key!r}: its samples have different numbers of dimensions",
                              hint="use batch size 1 for this model family")
        widest = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
        padded = []
        for t in tensors:
            out = t.new_zeros((t.shape[0], *widest))
            out[(slice(None), *(slice(0, n) for n in t.shape[1:]))] = t
            padded.append(out)
        tensors = padded
    return torch.cat(tensors)


def select_samples(inputs: dict[str, Any], rows: torch.Tensor, batch: int) -> dict[str, Any]:
    """The model inputs of samples `rows` out of a batch of `batch` made by `collate`.

    Per-sample tensors (first dimension `batch`) are indexed; flattened image patches
    (Qwen2-VL's `pixel_values`, dim 0 the sum of each image's grid t*h*w in `image_grid_thw`)
    are cut at the images' boundaries. Anything else passes unchanged.
    """
    out = dict(inputs)
    grid = inputs.get("image_grid_thw")
    for key, value in inputs.items():
        if not isinstance(value, torch.Tensor) or not value.dim():
            continue
        if key == "pixel_values" and isinstance(grid, torch.Tensor) and value.shape[0] != batch:
            sizes = grid.prod(-1).tolist()
            if sum(sizes) != value.shape[0] or len(sizes) != batch:
                raise EngineError(f"cannot split pixel_values {tuple(value.shape)} by image_grid_thw {sizes} "
                                  f"into {batch} samples")
            pieces = value.split(sizes)
            out[key] = torch.cat([pieces[i] for i in rows.tolist()])
        elif value.shape[0] == batch:
            out[key] = value.index_select(0, rows.to(value.device))
    return out
