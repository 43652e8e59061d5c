"""Caption contrast: rivals learnt from captions, one-word variants, and the contrast score."""
from __future__ import annotations

import numpy as np

from captioner.caption_contrast import build_rivals, contrast_scores, variants, words_of

CAPTIONS = [f"{c} {s} on {b}" for c in ("red", "blue", "green") for s in ("star", "circle")
            for b in ("gray", "white")] + [f"{s} video" for s in ("star", "circle")] * 3 + ["untitled"]
CAPTIONS += [f"{b} background" for b in ("gray", "white")] * 3  # a second place gray and white share


def test_words_are_lower_case_without_punctuation():
    assert words_of("Red STAR, on blue-ish.") == ["red", "star", "on", "blue-ish"]


def test_rivals_are_words_used_in_the_same_places():
    rivals = build_rivals(CAPTIONS + ["red satr on gray"])  # a one-off typo is no rival
    assert set(rivals["red"]) == {"blue", "green"}
    assert set(rivals["star"]) == {"circle"}
    assert set(rivals["gray"]) == {"white"}
    assert "satr" not in rivals and "satr" not in rivals["circle"]
    assert "on" not in rivals and "video" not in rivals  # nothing else stands where they stand
    assert "gray" not in build_rivals(CAPTIONS[:12])  # there gray and white share one place only


def test_variants_swap_one_word_at_a_time_never_to_a_word_already_there():
    rivals = {"red": ["blue", "green"], "star": ["circle"], "blue": ["red", "green"]}
    assert variants("Red star on blue", rivals) == [
        ["red star on blue", "green star on blue"],  # blue is there already
        ["red star on blue", "red circle on blue"],
        ["red star on blue", "green star on red"][:1] + ["red star on green"],
    ]
    assert variants("untitled", rivals) == []


def _encoder(vocab: list[str]):
    """Text embedding = normalised sum of one-hot word vectors (a perfect bag-of-words CLIP)."""
    def encode(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(vocab)), np.float32)
        for i, t in enumerate(texts):
            for w in words_of(t):
                out[i, vocab.index(w)] += 1
        return out / np.linalg.norm(out, axis=1, keepdims=True)
    return encode


def test_contrast_is_zero_for_the_true_caption_and_negative_for_a_swapped_one():
    vocab = ["red", "blue", "green", "star", "circle", "on", "gray", "white", "video", "untitled",
             "background"]
    encode = _encoder(vocab)
    rivals = build_rivals(CAPTIONS)
    clip = encode(["red star on gray"])[0]  # the clip shows a red star on gray
    true, wrong_colour, wrong_shape, vague, none = contrast_scores(
        np.stack([clip] * 5), ["red star on gray", "blue star on gray", "red circle on gray", "untitled", None],
        encode, logit_scale=50.0, rivals=rivals)
    assert true == 0.0
    assert wrong_colour < -1.0 and wrong_shape < -1.0  # a variant (the true caption) fits far better
    assert vague == 0.0 and none is None  # no swappable word: no evidence either way
