"""Scorers: how a task's predictions are compared with its reference answers.

``score(scorer, predictions, references) -> (score, per_sample, details)`` with

* ``score`` the task score, 0-100 (see the caption note below),
* ``per_sample`` one number per prediction (1.0 / 0.0 for the matching scorers),
* ``details`` a JSON-serialisable dict of counts and sub-scores.

A reference is a string or a list of strings (several acceptable answers / several reference
captions). For the matching scorers a prediction is correct when it matches *any* of its
references; ``caption`` uses all of them as the image's reference set.

The scorers:

``exact``
    Strict, case-insensitive exact match after trimming surrounding whitespace and one trailing
    period (``" Cat. "`` == ``"cat"``). This is what the continual-instruction-tuning papers
    use for classification, VQA and multiple choice.
``relaxed``
    ``exact``, or (on text with runs of whitespace collapsed) both sides read as numbers and
    are equal as numbers (``"3"`` == ``"3.0"``, ``"1,000"`` == ``"1000"``), or the reference is
    an option letter (``"B"``, ``"(B)"``, ``"B."``) and the option letter read from the
    prediction is that letter: ``"B"``, ``"(B)"``, ``"B."``, ``"B. blue"``, ``"(B) blue"``,
    ``"The answer is B"``, ``"Answer: (b)"``.
``choice``
    Multiple choice: the option letter is read from the prediction and from the reference
    (``"B"`` or ``"(B) blue"``) and the letters are compared. A reference with no letter falls
    back to ``exact`` (counted in ``details["reference_without_letter"]``); a prediction with no
    letter is wrong (counted in ``details["prediction_without_letter"]``).
``caption``
    The mean of BLEU-1, BLEU-2, BLEU-3, BLEU-4, ROUGE-L and CIDEr-D, each times 100, with the
    COCO-caption definitions (:mod:`hicl_app.engine.eval.caption`); ``details`` holds each metric on
    the COCO scale. METEOR and SPICE are left out: they need Java. CIDEr-D lives on a 0-10
    scale, so the caption score can exceed 100 for near-perfect captions (it never does in
    practice on real data, where CIDEr-D is usually below 1.5). ``per_sample`` holds, for each
    sample, the same mean of its sentence-level BLEU, ROUGE-L and CIDEr-D; the task score uses
    corpus-level BLEU, as COCO-caption does, so it is not the mean of ``per_sample``.

Pure Python: no torch or numpy, so the CLI can import it cheaply.
"""

from __future__ import annotations

import math
import re
from typing import Sequence, Union

from hicl_app.engine.eval import caption as _caption

__all__ = [
    "SCORERS",
    "score",
    "normalize",
    "extract_letter",
    "parse_number",
    "exact_match",
    "relaxed_match",
    "choice_match",
]

SCORERS = ("exact", "relaxed", "choice", "caption")

Reference = Union[str, Sequence[str]]


# --------------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """Trim whitespace and one trailing period, and case-fold: the ``exact`` normal form."""
    text = text.strip()
    if text.endswith("."):
        text = text[:-1].rstrip()
    return text.casefold()


_NUMBER_RE = re.compile(
    r"^[+-]?(?:\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?$"
)


def parse_number(text: str) -> float | None:
    """The number written in ``text`` (already normalised), or None.

    Accepts integers, decimals, exponents and thousands separators in groups of three
    (``"1,000"``, ``"12,345.5"``); ``"1,00"`` is not a number.
    """
    text = text.strip().casefold()
    if not _NUMBER_RE.match(text):
        return None
    try:
        value = float(text.replace(",", ""))
    except ValueError:  # pragma: no cover - the regex admits only valid floats
        return None
    return value if math.isfinite(value) else None


_L = r"[A-Za-z]"
# A bare letter: "B", "b", "(B)", "[B]", "B.", "B)", "B:".
_BARE_RE = re.compile(rf"^[(\[]?({_L})[)\]]?[.:)]?$")
# A letter opening the answer: "(B) blue", "[b] blue", "B. blue", "B) blue", "B: blue".
_LEADING_RE = (
    re.compile(rf"^[(\[]({_L})[)\]]"),
    re.compile(rf"^({_L})[.:)]\s"),
)
_KEYWORD = (
    r"(?i:\b(?:answer|option|choice)\b)"
    r"(?:\s+(?i:is|would\s+be|should\s+be)\b)?\s*[:=]?\s*"
)
# "The answer is B", "Answer: (b)", "the correct option is c." -- a lower-case letter only when
# parenthesised or followed by punctuation or the end, so "the answer is a dog" reads no letter.
_KEYWORD_RES = (
    re.compile(_KEYWORD + rf"[(\[]({_L})[)\]]"),
    re.compile(_KEYWORD + r"([A-Z])(?![\w'-])"),
    re.compile(_KEYWORD + r"([a-z])\s*(?=$|[.,;:!?)])"),
)


def extract_letter(text: str) -> str | None:
    """The option letter (upper case) that ``text`` gives as its answer, or None.

    Reads ``"B"``, ``"(B)"``, ``"B."``, ``"B. blue"``, ``"(B) blue"``, ``"The answer is B"``,
    ``"Answer: (b)"``; not ``"a dog"`` or ``"the answer is a dog"``.
    """
    text = " ".join(text.split())
    m = _BARE_RE.match(text)
    if m is None:
        for pattern in _LEADING_RE:
            m = pattern.match(text)
            if m is not None:
                break
    if m is None:
        for pattern in _KEYWORD_RES:
            m = pattern.search(text)
            if m is not None:
                break
    return m.group(1).upper() if m is not None else None


def _bare_letter(text: str) -> str | None:
    m = _BARE_RE.match(" ".join(text.split()))
    return m.group(1).upper() if m is not None else None


# --------------------------------------------------------------------------------------------
# Per-sample matchers
# --------------------------------------------------------------------------------------------


def exact_match(prediction: str, reference: str) -> bool:
    """``exact``: equal after :func:`normalize`."""
    return normalize(prediction) == normalize(reference)


def _relaxed_rule(prediction: str, reference: str) -> str | None:
    """Which relaxed rule makes the pair match ('exact', 'number', 'letter'), or None."""
    if exact_match(prediction, reference):
        return "exact"
    pred = " ".join(normalize(prediction).split())
    ref = " ".join(normalize(reference).split())
    if pred == ref:
        return "exact"
    ref_number = parse_number(ref)
    if ref_number is not None:
        pred_number = parse_number(pred)
        if pred_number is not None and math.isclose(
            pred_number, ref_number, rel_tol=1e-9, abs_tol=1e-12
        ):
            return "number"
    ref_letter = _bare_letter(reference)
    if ref_letter is not None and extract_letter(prediction) == ref_letter:
        return "letter"
    return None


def relaxed_match(prediction: str, reference: str) -> bool:
    """``relaxed``: exact, or equal as numbers, or the same option letter."""
    return _relaxed_rule(prediction, reference) is not None


def choice_match(prediction: str, reference: str) -> bool:
    """``choice``: the same option letter (``exact`` when the reference has no letter)."""
    ref_letter = extract_letter(reference)
    if ref_letter is None:
        return exact_match(prediction, reference)
    return extract_letter(prediction) == ref_letter


# --------------------------------------------------------------------------------------------
# score()
# --------------------------------------------------------------------------------------------


def _check_inputs(
    scorer: str, predictions: Sequence, references: Sequence
) -> tuple[list[str], list[list[str]]]:
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}; valid scorers: {', '.join(SCORERS)}")
    if isinstance(predictions, (str, bytes)) or isinstance(references, (str, bytes)):
        raise ValueError("predictions and references must be lists, not single strings")
    predictions = list(predictions)
    references = list(references)
    if not predictions and not references:
        raise ValueError("nothing to score: predictions and references are empty")
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references; "
            "they must pair up one to one"
        )
    preds: list[str] = []
    for i, p in enumerate(predictions):
        if p is None:
            p = ""
        if not isinstance(p, str):
            raise ValueError(f"prediction {i} is a {type(p).__name__}, not a string")
        preds.append(p)
    refs: list[list[str]] = []
    for i, r in enumerate(references):
        if isinstance(r, str):
            refs.append([r])
            continue
        if not isinstance(r, (list, tuple)):
            raise ValueError(
                f"reference {i} is a {type(r).__name__}; expected a string or a list of strings"
            )
        if not r:
            raise ValueError(f"reference {i} is an empty list")
        for s in r:
            if not isinstance(s, str):
                raise ValueError(f"reference {i} holds a {type(s).__name__}, not a string")
        refs.append(list(r))
    return preds, refs


def score(
    scorer: str, predictions: Sequence[str | None], references: Sequence[Reference]
) -> tuple[float, list[float], dict]:
    """Score ``predictions`` against ``references`` with ``scorer`` (one of :data:`SCORERS`).

    Returns ``(score, per_sample, details)``; see the module docstring. Raises ``ValueError``
    for an unknown scorer, empty inputs, lists of different lengths, or entries that are not
    strings (a ``None`` prediction counts as the empty string).
    """
    preds, refs = _check_inputs(scorer, predictions, references)
    n = len(preds)
    if scorer == "caption":
        return _score_caption(preds, refs)

    per_sample: list[float] = []
    details: dict = {"scorer": scorer, "n": n}
    if scorer == "exact":
        for p, rs in zip(preds, refs):
            per_sample.append(1.0 if any(exact_match(p, r) for r in rs) else 0.0)
    elif scorer == "relaxed":
        by_rule = {"exact": 0, "number": 0, "letter": 0}
        for p, rs in zip(preds, refs):
            rule = None
            for r in rs:
                rule = _relaxed_rule(p, r)
                if rule is not None:
                    break
            if rule is not None:
                by_rule[rule] += 1
            per_sample.append(1.0 if rule is not None else 0.0)
        details["matched_by"] = by_rule
    else:  # choice
        no_letter_pred = 0
        no_letter_ref = 0
        for p, rs in zip(preds, refs):
            if extract_letter(p) is None:
                no_letter_pred += 1
            if any(extract_letter(r) is None for r in rs):
                no_letter_ref += 1
            per_sample.append(1.0 if any(choice_match(p, r) for r in rs) else 0.0)
        details["prediction_without_letter"] = no_letter_pred
        details["reference_without_letter"] = no_letter_ref
    correct = int(sum(per_sample))
    details["correct"] = correct
    return 100.0 * correct / n, per_sample, details


def _score_caption(preds: list[str], refs: list[list[str]]) -> tuple[float, list[float], dict]:
    corpus, each = _caption.evaluate(preds, refs)
    names = _caption.METRIC_NAMES
    total = 100.0 * sum(corpus[k] for k in names) / len(names)
    per_sample = [100.0 * sum(s[k] for k in names) / len(names) for s in each]
    details: dict = {"scorer": "caption", "n": len(preds)}
    details.update({k: corpus[k] for k in names})
    details["scale"] = "COCO: BLEU and ROUGE-L in [0, 1], CIDEr-D in [0, 10]; score = mean x 100"
    details["left_out"] = list(_caption.LEFT_OUT)
    return total, per_sample, details
