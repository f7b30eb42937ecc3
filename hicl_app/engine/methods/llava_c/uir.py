"""Unsupervised Inquiry Regularization (UIR, LLaVA-c): keep the adapted model's features on
plain, unlabeled questions where the stage's starting model had them.

Our reading of the method (see `method.py`). An inquiry is an instruction without its
answer: the stage's own task questions plus a built-in pool of general questions; each step
draws half its inquiries from each. They go, text only, through the language model twice: with
the LoRA (`h`) and with
the adapter disabled (`h_ref`, no grad; the same weights, so no second model in memory). `h_ref`
does not change within a stage (the base weights are frozen and LoRA dropout acts on the
adapter path only), so `ReferenceFeatures` computes it once per inquiry and keeps it. The
loss is the mean over inquiry tokens of `‖h − h_ref‖²` (`mse`) or `1 − cos(h, h_ref)` (`cos`),
`h` the last hidden state (after the final norm). It is zero while the LoRA is zero (B = 0 at
initialisation) and grows as training drifts the features, which is the degradation towards a
task's instruction style ("Answer with a single word") that hurts general questions.

The held-out general task's prompts are never in the pool: it is the test of exactly this.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import nn

from ...data.encoding import Encoder
from ...modeling.models import find_language_model

# General questions of the kinds a multimodal assistant gets, none with its answer. They are
# not the benchmark's held-out `general` prompts (a test checks there is no overlap).
GENERAL_INQUIRIES: tuple[str, ...] = (
    "Can you explain what is going on here?",
    "What stands out the most?",
    "Give a detailed account of the scene.",
    "What colors are used, and where?",
    "How would you summarise this for someone who cannot see it?",
    "Which objects are there, and how are they arranged?",
    "Is there any text or number visible?",
    "What is the main subject?",
    "Write a short paragraph about this.",
    "What might have happened just before this?",
    "Are any of the shapes touching each other?",
    "Where is the largest object?",
    "List everything you notice.",
    "What is the background like?",
    "How many different colors are there?",
    "Which shape is closest to the center?",
    "Explain your reasoning step by step.",
    "What would you call this kind of picture?",
    "Compare the left side with the right side.",
    "Is anything unusual here? Why?",
    "What is a good title for this?",
    "What question would you ask about this?",
    "Please answer in a full sentence: what is shown?",
    "Tell me one interesting detail.",
)


#: distinct instructions kept per task (first seen); a real VQA set has thousands
MAX_TASK_INQUIRIES = 256


def task_instructions(records: list[dict]) -> list[str]:
    """A task's distinct questions (first-seen order, answers dropped), at most MAX_TASK_INQUIRIES."""
    questions = (str(r.get("question", "")).strip() for r in records)
    return list(dict.fromkeys(q for q in questions if q))[:MAX_TASK_INQUIRIES]


def encode_inquiries(processor: Any, questions: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each question as a text-only user turn in the model's chat format."""
    enc = Encoder(processor, max_length)
    out = []
    for q in questions:
        messages = [{"role": "user", "content": [{"type": "text", "text": q}]}]
        text = processor.apply_chat_template(messages, chat_template=enc.template, tokenize=False,
                                             add_generation_prompt=True)
        ids = processor.tokenizer(text)["input_ids"][:max_length]
        if ids:
            out.append(ids)
    return out


def pick(n_task: int, n_general: int, n: int, seed: int, step: int) -> tuple[list[int], list[int]]:
    """Which task and general inquiries step `step` uses: half of `n` (rounded up) from the task
    instructions, the rest from the general pool (all from one when the other is empty), without
    repeats. A function of (seed, step) only, so a resumed stage repeats it."""
    rng = random.Random(f"hicl-uir:{seed}:{step}")
    want_task = min(n_task, (n + 1) // 2 if n_general else n)
    tasks = rng.sample(range(n_task), want_task)
    general = rng.sample(range(n_general), min(n_general, n - want_task))
    if len(tasks) + len(general) < n:  # the general pool ran short: top up from the tasks
        rest = [i for i in range(n_task) if i not in tasks]
        tasks += rng.sample(rest, min(len(rest), n - len(tasks) - len(general)))
    return tasks, general


def _batch(inquiries: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(ids) for ids in inquiries)
    ids = torch.full((len(inquiries), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(inquiries), length), dtype=torch.long)
    for i, seq in enumerate(inquiries):
        ids[i, :len(seq)] = torch.tensor(seq)
        mask[i, :len(seq)] = 1
    return ids.to(device), mask.to(device)


def feature_distance(h: torch.Tensor, h_ref: torch.Tensor, mask: torch.Tensor, distance: str) -> torch.Tensor:
    """Mean over unmasked tokens of ‖h − h_ref‖² (`mse`) or 1 − cos (`cos`), in float32."""
    h, h_ref = h.float(), h_ref.float()
    if distance == "mse":
        per_token = (h - h_ref).pow(2).sum(-1)
    elif distance == "cos":
        # 1 - cos written as half the squared distance of the unit vectors: exactly 0 when h == h_ref
        unit = torch.nn.functional.normalize
        per_token = 0.5 * (unit(h, dim=-1) - unit(h_ref, dim=-1)).pow(2).sum(-1)
    else:
        raise ValueError(f"distance must be mse or cos, not {distance!r}")
    weights = mask.to(per_token.dtype)
    return (per_token * weights).sum() / weights.sum().clamp_min(1.0)


class ReferenceFeatures:
    """`h_ref` of every inquiry of a pool, from one adapter-disabled pass over the pool.

    The text-only features of the stage's starting model: computed on first use (in batches,
    entering `disable_adapter` once, not every step) and kept per inquiry, unpadded, so a step
    only runs the LoRA model. Memory: one hidden state per inquiry token.
    """

    def __init__(self, pool: list[list[int]], pad_id: int, batch_size: int = 32):
        self.pool, self.pad_id, self.batch_size = pool, pad_id, batch_size
        self.features: list[torch.Tensor] | None = None

    @torch.no_grad()
    def _compute(self, model: nn.Module) -> list[torch.Tensor]:
        _, lm = find_language_model(model)
        device = next(lm.parameters()).device
        out = []
        with model.disable_adapter():
            for start in range(0, len(self.pool), self.batch_size):
                chunk = self.pool[start:start + self.batch_size]
                ids, mask = _batch(chunk, self.pad_id, device)
                h = lm(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                out += [h[i, :len(seq)].clone() for i, seq in enumerate(chunk)]
        return out

    def batch(self, model: nn.Module, indices: list[int]) -> torch.Tensor:
        """[len(indices), longest, hidden] reference features, zero-padded on the right."""
        if self.features is None:
            self.features = self._compute(model)
        return torch.nn.utils.rnn.pad_sequence([self.features[i] for i in indices], batch_first=True)


def uir_loss(model: nn.Module, inquiries: list[list[int]], *, pad_id: int, distance: str,
             reference: torch.Tensor | None = None) -> torch.Tensor:
    """The UIR distance of `model` (a PEFT model) on `inquiries`, differentiable in the LoRA.

    `reference`: their adapter-disabled features (e.g. `ReferenceFeatures.batch`), else computed here."""
    _, lm = find_language_model(model)
    device = next(lm.parameters()).device
    ids, mask = _batch(inquiries, pad_id, device)
    h = lm(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    if reference is None:
        with torch.no_grad(), model.disable_adapter():
            reference = lm(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    return feature_distance(h, reference.to(h.device), mask, distance)
