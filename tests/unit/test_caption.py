"""COCO-caption metrics: hand-computed cases, with the arithmetic written out."""

from __future__ import annotations

import math

import pytest

from hicl_app.engine.eval import caption as C

TINY, SMALL = 1e-15, 1e-9  # COCO-caption's BLEU smoothing constants


def toks(text: str) -> list[str]:
    return text.split()


# ------------------------------------------------------------------------------------------
# tokenizer
# ------------------------------------------------------------------------------------------


def test_tokenize_lowercases_and_drops_punctuation():
    assert C.tokenize("A Man, riding a HORSE!") == ["a", "man", "riding", "a", "horse"]
    assert C.tokenize("  (on the beach).  ") == ["on", "the", "beach"]
    assert C.tokenize("") == []
    assert C.tokenize("...!?") == []


def test_tokenize_keeps_numbers_and_hyphenated_words_and_splits_clitics():
    assert C.tokenize("3.5 kg, 1,000 people") == ["3.5", "kg", "1,000", "people"]
    assert C.tokenize("a black-and-white photo") == ["a", "black-and-white", "photo"]
    assert C.tokenize("The dog's ball isn't red") == [
        "the", "dog", "'s", "ball", "is", "n't", "red"
    ]
    # the plural possessive's lone apostrophe is punctuation and goes
    assert C.tokenize("the dogs\u2019 bowls") == ["the", "dogs", "bowls"]
    assert C.tokenize("50% off") == ["50", "%", "off"]


# ------------------------------------------------------------------------------------------
# BLEU
# ------------------------------------------------------------------------------------------


def test_bleu_identical_caption_is_one():
    cand = toks("a man rides a horse")
    # Every clipped n-gram count equals the guess count: 5/5, 4/4, 3/3, 2/2; lengths equal, BP=1.
    corpus, per_sample = C.corpus_bleu([cand], [[cand]])
    for value in corpus + per_sample[0]:
        assert value == pytest.approx(1.0, abs=1e-9)


def test_bleu_brevity_penalty_and_empty_fourgram_smoothing():
    cand = toks("a man rides")  # c = 3
    ref = toks("a man rides a horse")  # r = 5
    # p1 = 3/3, p2 = 2/2, p3 = 1/1; no 4-gram at all: p4 = (0 + 1e-15) / (0 + 1e-9) = 1e-6.
    # BP = exp(1 - r/c) = exp(1 - 5/3) = exp(-2/3) = 0.513417...
    bp = math.exp(1 - 5 / 3)
    corpus, _ = C.corpus_bleu([cand], [[ref]])
    assert corpus[0] == pytest.approx(bp, rel=1e-8)
    assert corpus[1] == pytest.approx(bp, rel=1e-8)
    assert corpus[2] == pytest.approx(bp, rel=1e-8)
    # BLEU-4 = BP * (1 * 1 * 1 * 1e-6) ** (1/4) = 0.513417 * 0.0316228 = 0.016236
    assert corpus[3] == pytest.approx(bp * 1e-6**0.25, rel=1e-6)
    assert corpus[3] == pytest.approx(0.016236, abs=1e-6)


def test_bleu_closest_reference_length_ties_go_to_the_shorter():
    cand = toks("a dog runs fast")  # c = 4
    refs = [toks("a dog runs"), toks("a dog runs very fast")]  # lengths 3 and 5: both 1 away
    # Closest length: a tie between 3 and 5 -> 3, so c >= r and BP = 1
    # (were 5 chosen, BP would be exp(1 - 5/4) = 0.7788).
    # Clipped counts against the max count over both references:
    #   unigrams a, dog, runs, fast: all in some reference     -> p1 = 4/4
    #   bigrams  a dog, dog runs | runs fast (absent)           -> p2 = 2/3
    #   trigrams a dog runs | dog runs fast (absent)            -> p3 = 1/2
    # BLEU-1 = 1, BLEU-2 = sqrt(2/3) = 0.816497, BLEU-3 = (1 * 2/3 * 1/2)^(1/3) = 0.693361
    corpus, _ = C.corpus_bleu([cand], [refs])
    assert corpus[0] == pytest.approx(1.0, abs=1e-9)
    assert corpus[1] == pytest.approx(math.sqrt(2 / 3), rel=1e-8)
    assert corpus[1] == pytest.approx(0.816497, abs=1e-6)
    assert corpus[2] == pytest.approx((1 / 3) ** (1 / 3), rel=1e-8)
    assert corpus[2] == pytest.approx(0.693361, abs=1e-6)


def test_bleu_clips_repeated_words():
    # "the the the the" vs "the cat": unigram "the" counted min(4, 1) = 1 -> p1 = 1/4;
    # c = 4 > r = 2, BP = 1 -> BLEU-1 = 0.25
    corpus, _ = C.corpus_bleu([toks("the the the the")], [[toks("the cat")]])
    assert corpus[0] == pytest.approx(0.25, rel=1e-8)


def test_bleu_is_corpus_level_not_a_mean_of_sentences():
    cands = [toks("a b c d"), toks("x y")]
    refs = [[toks("a b c d")], [toks("x z w")]]
    # Summed over the corpus: guess1 = 4 + 2 = 6, correct1 = 4 + 1 (x) = 5 -> p1 = 5/6;
    # c = 4 + 2 = 6, r = 4 + 3 = 7 -> BP = exp(1 - 7/6) = 0.846482
    # BLEU-1 = 5/6 * 0.846482 = 0.705401
    corpus, per_sample = C.corpus_bleu(cands, refs)
    assert corpus[0] == pytest.approx(5 / 6 * math.exp(1 - 7 / 6), rel=1e-8)
    assert corpus[0] == pytest.approx(0.705401, abs=1e-6)
    # Sentence level: sample 1 is perfect, sample 2 has p1 = 1/2 and BP = exp(1 - 3/2).
    assert per_sample[0][0] == pytest.approx(1.0, abs=1e-9)
    assert per_sample[1][0] == pytest.approx(0.5 * math.exp(1 - 3 / 2), rel=1e-8)
    mean_of_sentences = (per_sample[0][0] + per_sample[1][0]) / 2
    assert abs(mean_of_sentences - corpus[0]) > 0.01


# ------------------------------------------------------------------------------------------
# ROUGE-L
# ------------------------------------------------------------------------------------------


def test_lcs_length():
    assert C.lcs_length(toks("a cat on the mat"), toks("the cat was on the mat")) == 4
    assert C.lcs_length([], toks("a b")) == 0
    assert C.lcs_length(toks("a b c"), toks("c b a")) == 1


def test_rouge_l_by_hand():
    cand = toks("a cat on the mat")  # 5 tokens
    ref = toks("the cat was on the mat")  # 6 tokens
    # LCS = "cat on the mat" = 4 -> P = 4/5 = 0.8, R = 4/6 = 0.666667
    # F = (1 + 1.2^2) P R / (R + 1.2^2 P) = 2.44 * 0.8 * 0.666667 / (0.666667 + 1.44 * 0.8)
    #   = 1.301333 / 1.818667 = 0.715543
    p, r, b2 = 0.8, 4 / 6, 1.44
    mean, each = C.rouge_l([cand], [[ref]])
    assert each[0] == pytest.approx((1 + b2) * p * r / (r + b2 * p), rel=1e-12)
    assert mean == pytest.approx(0.715543, abs=1e-6)


def test_rouge_l_takes_max_precision_and_max_recall_separately():
    cand = toks("dog runs on grass")  # 4 tokens
    refs = [toks("dog runs"), toks("a dog runs on green grass right now")]
    # ref 1: LCS 2 -> P = 2/4, R = 2/2 = 1;  ref 2: LCS 4 -> P = 4/4 = 1, R = 4/8.
    # COCO-caption takes max P = 1 and max R = 1 separately -> F = 1 (a max of per-reference F
    # would give less).
    mean, _ = C.rouge_l([cand], [refs])
    assert mean == pytest.approx(1.0)


def test_rouge_l_mean_over_candidates_and_empty_candidate():
    mean, each = C.rouge_l([toks("a b"), []], [[toks("a b")], [toks("a b")]])
    assert each == [pytest.approx(1.0), 0.0]
    assert mean == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------
# CIDEr-D
# ------------------------------------------------------------------------------------------


def test_cider_d_single_image_is_zero():
    # One image: N = 1, idf = log(1) - log(max(1, df)) = 0 - 0 = 0 for every n-gram, so all
    # tf-idf vectors are zero and CIDEr-D is 0 even for a perfect caption.
    cap = toks("a man rides a horse")
    mean, each = C.cider_d([cap], [[cap]])
    assert mean == 0.0 and each == [0.0]


def test_cider_d_two_images_identical_two_word_captions():
    cands = [toks("a cat"), toks("a dog")]
    refs = [[toks("a cat")], [toks("a dog")]]
    # N = 2. df(a) = 2, df(cat) = df(dog) = df(a cat) = df(a dog) = 1.
    # idf(a) = log 2 - log 2 = 0; idf(cat) = idf(a cat) = log 2 - log 1 = log 2.
    # Image 1, n = 1: h = r = {a: 0, cat: log2}; sum min(h, r) r = log2^2; |h||r| = log2^2 -> 1
    #          n = 2: {a cat: log2} on both sides -> 1
    #          n = 3, 4: no n-grams, zero norms -> 0
    # lengths equal -> penalty 1; mean over n = (1 + 1 + 0 + 0)/4 = 0.5; x10 = 5.
    mean, each = C.cider_d(cands, refs)
    assert each == [pytest.approx(5.0), pytest.approx(5.0)]
    assert mean == pytest.approx(5.0)


def test_cider_d_wrong_caption_scores_zero_on_its_image():
    cands = [toks("a cat"), toks("a cat")]
    refs = [[toks("a cat")], [toks("a dog")]]
    # Same idf as above. Image 2: h = {a: 0, cat: log2}, r = {a: 0, dog: log2}:
    # sum min(h, r) r = 0 (a has weight 0, cat is absent from r); bigrams differ -> 0.
    # CIDEr-D = (5 + 0) / 2 = 2.5
    mean, each = C.cider_d(cands, refs)
    assert each == [pytest.approx(5.0), pytest.approx(0.0)]
    assert mean == pytest.approx(2.5)


def test_cider_d_three_images_with_length_penalty():
    cands = [toks("a cat"), toks("a dog"), toks("the bird")]
    refs = [[toks("a cat sits")], [toks("a dog")], [toks("the bird")]]
    # N = 3: idf(a) = log3 - log2 = log 1.5 = 0.405465 (df 2); every other n-gram has df 1:
    # idf = log 3 = 1.098612.
    l15, l3 = math.log(1.5), math.log(3)
    # Image 1: h1 = {a: l15, cat: l3}, r1 = {a: l15, cat: l3, sits: l3}
    #   n=1: (l15^2 + l3^2) / (sqrt(l15^2 + l3^2) sqrt(l15^2 + 2 l3^2))
    #      = sqrt(1.371351) / sqrt(2.578300) = 0.729302
    #   n=2: h2 = {a cat: l3}, r2 = {a cat: l3, cat sits: l3}: l3^2 / (l3 * sqrt(2) l3) = 0.707107
    #   n=3, 4: the candidate has none -> 0
    #   lengths (bigram counts) 1 and 2: delta = -1, penalty = exp(-1/72) = 0.986207
    #   score = 10 * 0.986207 * (0.729302 + 0.707107) / 4 = 3.541493
    s1 = math.sqrt(l15**2 + l3**2) / math.sqrt(l15**2 + 2 * l3**2)
    s2 = 1 / math.sqrt(2)
    image1 = 10 * math.exp(-1 / 72) * (s1 + s2) / 4
    assert image1 == pytest.approx(3.541493, abs=1e-6)
    # Images 2 and 3 are identical two-word captions: (1 + 1 + 0 + 0) / 4 * 10 = 5.
    # CIDEr-D = (3.541493 + 5 + 5) / 3 = 4.513831
    mean, each = C.cider_d(cands, refs)
    assert each == [pytest.approx(image1, rel=1e-12), pytest.approx(5.0), pytest.approx(5.0)]
    assert mean == pytest.approx(4.513831, abs=1e-6)


def test_cider_d_averages_over_references():
    cands = [toks("a cat"), toks("a dog")]
    refs = [[toks("a cat"), toks("the bird")], [toks("a dog")]]
    # df: a 2, cat 1, a cat 1, the 1, bird 1, the bird 1, dog 1, a dog 1; N = 2 -> idf(a) = 0,
    # every other n-gram log 2. Image 1: vs "a cat" -> [1, 1, 0, 0]; vs "the bird" -> all 0.
    # sum over refs = [1, 1, 0, 0]; mean over n = 0.5; / 2 refs = 0.25; x10 = 2.5.
    mean, each = C.cider_d(cands, refs)
    assert each[0] == pytest.approx(2.5)
    assert each[1] == pytest.approx(5.0)


# ------------------------------------------------------------------------------------------
# Against the reference implementation
# ------------------------------------------------------------------------------------------

# Corpus-level values printed by pycocoevalcap 1.2 (Bleu(4), Rouge(), Cider()) for this corpus,
# fed the same whitespace-tokenised, punctuation-free lower-case captions.
_GTS = [
    [
        "a man is riding a horse on the beach",
        "a person rides a brown horse along the shore",
        "a horse and rider on the sand",
    ],
    [
        "two dogs play with a red ball in the grass",
        "two dogs are playing in a field",
        "dogs chase a ball on the lawn",
    ],
    ["a plate of food with broccoli and rice", "a white plate topped with rice and vegetables"],
    ["a cat sleeping on a laptop keyboard", "a cat is lying on a computer"],
]
_RES = [
    "a man riding a horse on the beach",
    "two dogs playing with a ball",
    "a plate with rice and broccoli",
    "a dog sitting on a couch",
]
_COCO_BLEU = [0.7882129870162066, 0.6442088369549246, 0.46832425521478466, 0.374223078960357]
_COCO_ROUGE = [0.931297709923664, 0.6559139784946236, 0.6963470319634703, 0.45522388059701485]
_COCO_CIDER = [3.0474086996466636, 1.7665667586437805, 2.458009008239787, 0.4820450474000337]


def test_matches_pycocoevalcap_reference_values():
    cands = [toks(c) for c in _RES]
    refs = [[toks(r) for r in rs] for rs in _GTS]
    bleu, _ = C.corpus_bleu(cands, refs)
    assert bleu == pytest.approx(_COCO_BLEU, rel=1e-12)
    rouge, rouge_each = C.rouge_l(cands, refs)
    assert rouge_each == pytest.approx(_COCO_ROUGE, rel=1e-12)
    assert rouge == pytest.approx(0.6846956502446933, rel=1e-12)
    cider, cider_each = C.cider_d(cands, refs)
    assert cider_each == pytest.approx(_COCO_CIDER, rel=1e-9)
    assert cider == pytest.approx(1.9385073784825662, rel=1e-9)


def test_evaluate_tokenizes_raw_strings():
    raw_res = [c.capitalize() + "." for c in _RES]
    raw_gts = [[r.upper() + " !" for r in rs] for rs in _GTS]
    corpus, per_sample = C.evaluate(raw_res, raw_gts)
    assert list(corpus) == list(C.METRIC_NAMES)
    assert [corpus[f"bleu_{k}"] for k in range(1, 5)] == pytest.approx(_COCO_BLEU, rel=1e-12)
    assert corpus["rouge_l"] == pytest.approx(0.6846956502446933, rel=1e-12)
    assert corpus["cider_d"] == pytest.approx(1.9385073784825662, rel=1e-9)
    assert len(per_sample) == 4
    assert [s["cider_d"] for s in per_sample] == pytest.approx(_COCO_CIDER, rel=1e-9)


def test_input_errors():
    with pytest.raises(ValueError):
        C.corpus_bleu([], [])
    with pytest.raises(ValueError):
        C.rouge_l([["a"]], [])
    with pytest.raises(ValueError, match="no reference"):
        C.cider_d([["a"]], [[]])


def test_left_out_metrics_are_documented():
    assert C.LEFT_OUT == ("METEOR", "SPICE")
    assert "Java" in (C.__doc__ or "")
