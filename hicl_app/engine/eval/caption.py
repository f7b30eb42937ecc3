"""Caption metrics with the COCO-caption definitions, in pure Python.

What is here, and how it follows the reference code (``pycocoevalcap``, the MS-COCO caption
evaluation toolkit):

* :func:`tokenize` -- an approximation of the PTB tokenizer that COCO-caption runs (Stanford
  CoreNLP ``PTBTokenizer -lowerCase``, then punctuation tokens dropped). Lower-cases, splits off
  punctuation and drops it, keeps numbers such as ``3.5`` or ``1,000`` and hyphenated words
  whole, and splits clitics the PTB way (``don't`` -> ``do n't``, ``dog's`` -> ``dog 's``).
  It is not byte-identical to CoreNLP on every input (abbreviations such as ``e.g.`` are split,
  for instance), which can move scores slightly on unusual text.
* :func:`corpus_bleu` -- BLEU-1..4 exactly as COCO-caption computes them: clipped n-gram
  counts against the per-n-gram maximum over an image's references, the effective reference
  length of each candidate the *closest* reference length (ties go to the shorter), counts and
  lengths summed over the corpus, BLEU-n the geometric mean of the precisions 1..n, times the
  brevity penalty ``exp(1 - r/c)`` when ``c < r``. The toolkit's smoothing constants are kept
  (``(correct + 1e-15) / (guess + 1e-9)``), so a precision with nothing to count is ~1e-6,
  not 0 -- e.g. BLEU-4 of a 3-word corpus is ``BP * (p1 p2 p3 1e-6) ** 0.25``, as COCO reports.
* :func:`rouge_l` -- ROUGE-L as COCO-caption: LCS over tokens, per image the *maximum precision*
  and the *maximum recall* over its references (taken separately, as the reference code does),
  ``F = (1 + b^2) P R / (R + b^2 P)`` with ``b = 1.2``, mean over images.
* :func:`cider_d` -- CIDEr-D as COCO-caption's ``Cider`` scorer: n-grams 1..4 with raw counts
  as term frequencies, document frequency = number of images whose reference set contains the
  n-gram, ``idf = log(N) - log(max(1, df))`` with N the number of images, clipped similarity
  ``sum min(h, r) * r / (|h| |r|)`` per n, a Gaussian length penalty
  ``exp(-(l_h - l_r)^2 / (2 * 6^2))``, mean over n, mean over references, times 10, mean over
  images. (Lengths are counted as the reference code counts them -- as the number of bigrams;
  the difference of two such counts equals the difference of word counts whenever both
  captions are non-empty, and an empty caption scores 0 either way.) Because idf is taken from
  the reference set, CIDEr-D depends on the whole corpus: with a single image every n-gram has
  ``idf = log 1 - log 1 = 0`` and CIDEr-D is 0, whatever the captions.

METEOR and SPICE are left out on purpose: their reference implementations are Java programs
(METEOR 1.5 and the SPICE jar with Stanford CoreNLP), which hicl does not require. Scores here are
therefore not comparable with papers' numbers that average in METEOR or SPICE.

Everything here is plain Python (no numpy), so the CLI can import it cheaply.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

__all__ = [
    "tokenize",
    "ngram_counts",
    "corpus_bleu",
    "rouge_l",
    "lcs_length",
    "cider_d",
    "evaluate",
    "METRIC_NAMES",
    "LEFT_OUT",
]

#: Keys of :func:`evaluate`'s corpus scores, in display order.
METRIC_NAMES = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d")

#: Metrics of the COCO-caption toolkit that hicl does not compute (they need Java).
LEFT_OUT = ("METEOR", "SPICE")

# COCO-caption's BLEU smoothing constants (bleu_scorer.py): "so that if guess is 0 still return 0".
_TINY = 1e-15
_SMALL = 1e-9

# --------------------------------------------------------------------------------------------
# Tokenisation
# --------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
      \d+(?:[.,:/]\d+)+            # numbers with inner separators: 3.5  1,000  10:30  1/2
    | [^\W_]+(?:[-'&][^\W_]+)*     # words, keeping inner hyphens, apostrophes, ampersands
    | [$%#@&+=<>*/^~|\\]            # symbols the PTB tokenizer keeps as tokens
    """,
    re.VERBOSE,
)
_NT_RE = re.compile(r"^(.+?)(n't)$")
_CLITIC_RE = re.compile(r"^(.+?)('s|'re|'ve|'ll|'d|'m)$")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


def tokenize(text: str) -> list[str]:
    """Lower-cased tokens of ``text`` with punctuation removed (PTB-tokenizer approximation).

    >>> tokenize("A man's riding a horse, isn't he?")
    ['a', 'man', "'s", 'riding', 'a', 'horse', 'is', "n't", 'he']
    """
    if text is None:
        return []
    text = str(text).translate(_QUOTES).lower()
    tokens: list[str] = []
    for match in _TOKEN_RE.finditer(text):
        tok = match.group(0)
        m = _NT_RE.match(tok)
        if m is None:
            m = _CLITIC_RE.match(tok)
        if m is not None:
            tokens.extend((m.group(1), m.group(2)))
        else:
            tokens.append(tok)
    return tokens


def ngram_counts(tokens: Sequence[str], n: int = 4) -> Counter:
    """Counts of all n-grams (as tuples) of orders 1..n in ``tokens``."""
    counts: Counter = Counter()
    length = len(tokens)
    for k in range(1, n + 1):
        for i in range(length - k + 1):
            counts[tuple(tokens[i : i + k])] += 1
    return counts


def _check_corpus(candidates: Sequence, references: Sequence) -> None:
    if len(candidates) != len(references):
        raise ValueError(
            f"{len(candidates)} candidates but {len(references)} reference sets; they must pair up"
        )
    if not candidates:
        raise ValueError("no captions to score")
    for i, refs in enumerate(references):
        if len(refs) == 0:
            raise ValueError(f"sample {i} has no reference caption")


# --------------------------------------------------------------------------------------------
# BLEU
# --------------------------------------------------------------------------------------------


def corpus_bleu(
    candidates: Sequence[Sequence[str]],
    references: Sequence[Sequence[Sequence[str]]],
    n: int = 4,
) -> tuple[list[float], list[list[float]]]:
    """COCO-caption BLEU-1..n of tokenised captions.

    ``candidates[i]`` is the token list of candidate i, ``references[i]`` its list of reference
    token lists. Returns ``(corpus, per_sample)``: ``corpus[k-1]`` is the corpus-level BLEU-k
    (what COCO-caption reports), ``per_sample[i][k-1]`` the same formula applied to sample i alone
    (sentence-level BLEU; not averaged into the corpus score).
    """
    _check_corpus(candidates, references)
    total_test = 0
    total_ref = 0
    total_guess = [0] * n
    total_correct = [0] * n
    per_sample: list[list[float]] = []
    for cand, refs in zip(candidates, references):
        max_ref_counts: dict[tuple, int] = {}
        ref_lens = []
        for ref in refs:
            ref_lens.append(len(ref))
            for gram, count in ngram_counts(ref, n).items():
                if count > max_ref_counts.get(gram, 0):
                    max_ref_counts[gram] = count
        test_len = len(cand)
        # 'closest' effective reference length; ties go to the shorter reference.
        ref_len = min((abs(length - test_len), length) for length in ref_lens)[1]
        guess = [max(0, test_len - k + 1) for k in range(1, n + 1)]
        correct = [0] * n
        for gram, count in ngram_counts(cand, n).items():
            correct[len(gram) - 1] += min(max_ref_counts.get(gram, 0), count)
        total_test += test_len
        total_ref += ref_len
        for k in range(n):
            total_guess[k] += guess[k]
            total_correct[k] += correct[k]
        per_sample.append(_bleu_from_counts(correct, guess, test_len, ref_len, n))
    corpus = _bleu_from_counts(total_correct, total_guess, total_test, total_ref, n)
    return corpus, per_sample


def _bleu_from_counts(
    correct: Sequence[int], guess: Sequence[int], test_len: int, ref_len: int, n: int
) -> list[float]:
    scores = []
    product = 1.0
    for k in range(n):
        product *= (correct[k] + _TINY) / (guess[k] + _SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        penalty = math.exp(1 - 1 / ratio)
        scores = [s * penalty for s in scores]
    return scores


# --------------------------------------------------------------------------------------------
# ROUGE-L
# --------------------------------------------------------------------------------------------


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            if x == y:
                current[j] = previous[j - 1] + 1
            else:
                current[j] = current[j - 1] if current[j - 1] > previous[j] else previous[j]
        previous = current
    return previous[len(b)]


def rouge_l(
    candidates: Sequence[Sequence[str]],
    references: Sequence[Sequence[Sequence[str]]],
    beta: float = 1.2,
) -> tuple[float, list[float]]:
    """COCO-caption ROUGE-L: ``(mean over samples, per-sample scores)``, each in [0, 1]."""
    _check_corpus(candidates, references)
    scores = []
    for cand, refs in zip(candidates, references):
        best_p = 0.0
        best_r = 0.0
        for ref in refs:
            if not cand or not ref:
                continue
            lcs = lcs_length(ref, cand)
            best_p = max(best_p, lcs / len(cand))
            best_r = max(best_r, lcs / len(ref))
        if best_p > 0 and best_r > 0:
            b2 = beta * beta
            scores.append((1 + b2) * best_p * best_r / (best_r + b2 * best_p))
        else:
            scores.append(0.0)
    return sum(scores) / len(scores), scores


# --------------------------------------------------------------------------------------------
# CIDEr-D
# --------------------------------------------------------------------------------------------


def cider_d(
    candidates: Sequence[Sequence[str]],
    references: Sequence[Sequence[Sequence[str]]],
    n: int = 4,
    sigma: float = 6.0,
) -> tuple[float, list[float]]:
    """COCO-caption CIDEr-D: ``(mean over samples, per-sample scores)``, each in [0, 10].

    The document frequencies come from ``references`` (one document per sample), so the score
    of a sample depends on the rest of the corpus; with a single sample it is 0.
    """
    _check_corpus(candidates, references)
    ref_counts = [[ngram_counts(ref, n) for ref in refs] for refs in references]
    doc_freq: Counter = Counter()
    for counts_of_refs in ref_counts:
        seen = set()
        for counts in counts_of_refs:
            seen.update(counts)
        doc_freq.update(seen)
    log_n_docs = math.log(float(len(references)))

    def to_vector(counts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            weight = float(tf) * (log_n_docs - math.log(max(1.0, doc_freq.get(gram, 0.0))))
            vec[k][gram] = weight
            norm[k] += weight * weight
            if k == 1:  # the reference code measures length in bigrams (see module docstring)
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    def similarity(hyp, ref) -> list[float]:
        vec_h, norm_h, len_h = hyp
        vec_r, norm_r, len_r = ref
        delta = float(len_h - len_r)
        penalty = math.exp(-(delta * delta) / (2 * sigma * sigma))
        out = []
        for k in range(n):
            value = 0.0
            for gram, weight in vec_h[k].items():
                ref_weight = vec_r[k].get(gram, 0.0)
                value += min(weight, ref_weight) * ref_weight  # clipped
            if norm_h[k] != 0 and norm_r[k] != 0:
                value /= norm_h[k] * norm_r[k]
            else:
                value = 0.0
            out.append(value * penalty)
        return out

    scores = []
    for cand, counts_of_refs in zip(candidates, ref_counts):
        hyp = to_vector(ngram_counts(cand, n))
        total = [0.0] * n
        for counts in counts_of_refs:
            for k, value in enumerate(similarity(hyp, to_vector(counts))):
                total[k] += value
        mean_over_n = sum(total) / n
        scores.append(mean_over_n / len(counts_of_refs) * 10.0)
    return sum(scores) / len(scores), scores


# --------------------------------------------------------------------------------------------
# All together
# --------------------------------------------------------------------------------------------


def evaluate(
    candidates: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Tokenise and score raw caption strings.

    ``references[i]`` is the list of reference captions of sample i. Returns
    ``(corpus, per_sample)``: ``corpus`` maps each of :data:`METRIC_NAMES` to its corpus score
    on the COCO scale (BLEU and ROUGE-L in [0, 1], CIDEr-D in [0, 10]); ``per_sample[i]`` holds
    sample i's sentence-level BLEU, its ROUGE-L and its CIDEr-D (the corpus-level BLEU is not
    the mean of the sentence-level ones).
    """
    cands = [tokenize(c) for c in candidates]
    refs = [[tokenize(r) for r in rs] for rs in references]
    bleu, bleu_each = corpus_bleu(cands, refs)
    rouge, rouge_each = rouge_l(cands, refs)
    cider, cider_each = cider_d(cands, refs)
    corpus = {
        "bleu_1": bleu[0],
        "bleu_2": bleu[1],
        "bleu_3": bleu[2],
        "bleu_4": bleu[3],
        "rouge_l": rouge,
        "cider_d": cider,
    }
    per_sample = [
        {
            "bleu_1": b[0],
            "bleu_2": b[1],
            "bleu_3": b[2],
            "bleu_4": b[3],
            "rouge_l": r,
            "cider_d": c,
        }
        for b, r, c in zip(bleu_each, rouge_each, cider_each)
    ]
    return corpus, per_sample
