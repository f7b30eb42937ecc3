"""Scorers: exact, relaxed, choice, caption."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hicl_app.engine.eval import caption, scorers
from hicl_app.engine.eval.scorers import SCORERS, extract_letter, parse_number, score


def test_scorer_names():
    assert SCORERS == ("exact", "relaxed", "choice", "caption")


# ------------------------------------------------------------------------------------------
# exact
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred, ref",
    [
        ("cat", "cat"),
        ("Cat", "cat"),
        ("  CAT. ", "cat"),
        ("cat.", "Cat."),
        ("cat", "cat."),
        ("Yes", "yes"),
        ("a red car", "A red car."),
    ],
)
def test_exact_matches(pred, ref):
    assert score("exact", [pred], [ref])[0] == 100.0


@pytest.mark.parametrize(
    "pred, ref",
    [
        ("cat..", "cat"),  # only one trailing period goes
        ("cats", "cat"),
        ("3.0", "3"),
        ("(B)", "B"),
        ("a  red car", "a red car"),  # strict: inner whitespace counts
        ("cat!", "cat"),
        ("", "cat"),
    ],
)
def test_exact_rejects(pred, ref):
    assert score("exact", [pred], [ref])[0] == 0.0


def test_exact_score_per_sample_and_details():
    total, per_sample, details = score("exact", ["a", "b", "c", "D"], ["a", "x", "c", "d"])
    assert total == 75.0
    assert per_sample == [1.0, 0.0, 1.0, 1.0]
    assert details["n"] == 4 and details["correct"] == 3 and details["scorer"] == "exact"
    json.dumps(details)


def test_any_of_several_references_counts():
    total, per_sample, _ = score("exact", ["grey", "gray", "blue"], [["gray", "grey"]] * 3)
    assert per_sample == [1.0, 1.0, 0.0]
    assert total == pytest.approx(200 / 3)


def test_none_prediction_is_empty_string():
    assert score("exact", [None], ["cat"])[1] == [0.0]
    assert score("exact", [None], [""])[1] == [1.0]


# ------------------------------------------------------------------------------------------
# relaxed
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred, ref, rule",
    [
        ("Cat.", "cat", "exact"),
        ("a  red   car", "a red car", "exact"),
        ("3", "3.0", "number"),
        ("3.0", "3", "number"),
        ("3.", "3", "exact"),
        ("1,000", "1000", "number"),
        ("1000", "1,000", "number"),
        ("12,345.50", "12345.5", "number"),
        ("-2", "-2.00", "number"),
        ("0.5", ".5", "number"),
        ("1e3", "1000", "number"),
        ("B", "B", "exact"),
        ("(B)", "B", "letter"),
        ("B.", "B", "exact"),
        ("B. blue", "B", "letter"),
        ("(B) blue", "B", "letter"),
        ("b", "(B)", "letter"),
        ("The answer is B", "B", "letter"),
        ("The answer is B.", "B", "letter"),
        ("Answer: (b)", "B", "letter"),
    ],
)
def test_relaxed_matches(pred, ref, rule):
    total, _, details = score("relaxed", [pred], [ref])
    assert total == 100.0
    assert details["matched_by"][rule] == 1


@pytest.mark.parametrize(
    "pred, ref",
    [
        ("3", "4"),
        ("1,00", "100"),  # not a thousands separator
        ("3 apples", "3"),
        ("C", "B"),
        ("The answer is C", "B"),
        ("blue", "B"),  # no letter in the prediction
        ("B", "blue"),  # the reference is not a letter
        ("the answer is a dog", "A"),
        ("three", "3"),
    ],
)
def test_relaxed_rejects(pred, ref):
    assert score("relaxed", [pred], [ref])[0] == 0.0


def test_parse_number():
    assert parse_number("3") == 3.0
    assert parse_number("1,234,567") == 1234567.0
    assert parse_number("+4.") == 4.0
    assert parse_number("1,00") is None
    assert parse_number("nan") is None
    assert parse_number("inf") is None
    assert parse_number("3 apples") is None


# ------------------------------------------------------------------------------------------
# choice
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, letter",
    [
        ("B", "B"),
        ("b", "B"),
        ("(B)", "B"),
        ("[C]", "C"),
        ("B.", "B"),
        ("B)", "B"),
        ("B. blue", "B"),
        ("(B) blue", "B"),
        ("D: a red car", "D"),
        ("The answer is B", "B"),
        ("the correct answer is (c).", "C"),
        ("Answer: A", "A"),
        ("The best option is D.", "D"),
        ("blue", None),
        ("a dog", None),
        ("the answer is a dog", None),
        ("The answer is Blue", None),
        ("", None),
        ("e.g. blue", None),
    ],
)
def test_extract_letter(text, letter):
    assert extract_letter(text) == letter


def test_choice_compares_letters():
    preds = ["B", "(B) blue", "The answer is B", "C", "blue", "A. red"]
    refs = ["(B) blue", "B", "B. blue", "B", "B", "(A) red"]
    total, per_sample, details = score("choice", preds, refs)
    assert per_sample == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    assert total == pytest.approx(400 / 6)
    assert details["prediction_without_letter"] == 1
    assert details["reference_without_letter"] == 0


def test_choice_reference_without_letter_falls_back_to_exact():
    total, per_sample, details = score("choice", ["Blue.", "red"], ["blue", "blue"])
    assert per_sample == [1.0, 0.0]
    assert details["reference_without_letter"] == 2


# ------------------------------------------------------------------------------------------
# caption
# ------------------------------------------------------------------------------------------


def test_caption_score_is_mean_of_six_metrics_times_100():
    preds = ["a man riding a horse on the beach.", "Two dogs playing with a ball", "a cat"]
    refs = [
        ["A man is riding a horse on the beach", "a person rides a horse"],
        "two dogs play with a red ball",
        ["a cat sleeping on a laptop"],
    ]
    total, per_sample, details = score("caption", preds, refs)
    corpus, each = caption.evaluate(preds, [[r] if isinstance(r, str) else r for r in refs])
    names = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d")
    assert total == pytest.approx(100 * sum(corpus[k] for k in names) / 6)
    for k in names:
        assert details[k] == pytest.approx(corpus[k])
    assert per_sample == pytest.approx([100 * sum(s[k] for k in names) / 6 for s in each])
    assert details["left_out"] == ["METEOR", "SPICE"]
    assert details["n"] == 3
    json.dumps(details)


def test_caption_perfect_on_two_images():
    # Identical two-word captions on two images: BLEU-1 = BLEU-2 = 1; no 3- or 4-grams, so
    # BLEU-3 = (1 * 1 * 1e-6)^(1/3) = 0.01 and BLEU-4 = (1e-6 * 1e-6)^(1/4) = 0.001 (COCO's
    # smoothing); ROUGE-L = 1; CIDEr-D = 5 (see test_caption). Score = 100 (1 + 1 + 0.01 + 0.001
    # + 1 + 5) / 6 = 133.5167
    total, _, details = score("caption", ["a cat", "a dog"], ["a cat", ["a dog"]])
    assert details["bleu_3"] == pytest.approx(0.01, rel=1e-6)
    assert details["bleu_4"] == pytest.approx(0.001, rel=1e-6)
    assert details["cider_d"] == pytest.approx(5.0)
    assert total == pytest.approx(100 * (3.011 + 5) / 6, rel=1e-6)


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------


def test_unknown_scorer_names_valid_ones():
    with pytest.raises(ValueError) as info:
        score("bleu", ["a"], ["a"])
    for name in SCORERS:
        assert name in str(info.value)


@pytest.mark.parametrize("name", SCORERS)
def test_empty_lists(name):
    with pytest.raises(ValueError, match="empty"):
        score(name, [], [])


@pytest.mark.parametrize("name", SCORERS)
def test_length_mismatch(name):
    with pytest.raises(ValueError, match="pair up"):
        score(name, ["a", "b"], ["a"])


def test_bad_entries():
    with pytest.raises(ValueError):
        score("exact", [3], ["3"])
    with pytest.raises(ValueError):
        score("exact", ["a"], [[]])
    with pytest.raises(ValueError):
        score("exact", ["a"], [None])
    with pytest.raises(ValueError):
        score("exact", "abc", "abc")


def test_modules_import_without_torch_or_numpy():
    code = (
        "import sys\n"
        "import hicl_app.engine.eval.scorers, hicl_app.engine.eval.caption, hicl_app.core.clmetrics\n"
        "bad = [m for m in ('torch', 'numpy') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2]
    )


def test_module_exports():
    for name in scorers.__all__:
        assert hasattr(scorers, name)
