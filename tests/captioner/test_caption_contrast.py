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


def test_words_that_describe_the_same_clips_are_not_rivals():
    """A clip captioned "red ball" and "a red circle spins" says ball = circle: a caption with one
    is no evidence against the other. Colours that share a clip now and then (two objects, an
    object on a background) stay rivals."""
    shapes = {"circle": "ball", "star": "star", "square": "box"}
    clips = []
    for i, (c, s, b) in enumerate((c, s, b) for c in ("red", "blue", "green") for s in shapes
                                  for b in ("gray", "white")):
        alt = shapes[s] if i % 2 == 0 else s  # alt texts use either word
        clips.append([f"{c} {alt} on {b}", f"a {c} {s} spins over a {b} background"])
        clips.append([f"{c} {s} video"])
    clips.append(["a red star and a blue star spin over a gray background"])
    flat = sorted({t for texts in clips for t in texts})
    by_place = build_rivals(flat)
    assert "circle" in by_place["ball"] and "box" in by_place["square"]  # same places
    rivals = build_rivals(flat, clips=clips)
    assert "circle" not in rivals["ball"] and "ball" not in rivals["circle"]
    assert "box" not in rivals["square"] and "star" in rivals["ball"] and "box" in rivals["ball"]
    assert set(rivals["red"]) >= {"blue", "green"}  # on one clip together once: still rivals


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


def test_objects_judge_a_text_by_the_object_it_names():
    """A red star beside a blue circle: the mean embedding cannot tell "blue star" (wrong) from
    "red star" (true); judged object by object it can."""
    vocab = ["red", "blue", "green", "star", "circle", "on", "gray", "white", "video", "untitled",
             "background"]
    encode = _encoder(vocab)
    rivals = build_rivals(CAPTIONS)
    objects = encode(["red star", "blue circle"])  # (2, D)
    mean = objects.mean(0) / np.linalg.norm(objects.mean(0))
    texts = ["red star", "blue star", "blue circle"]
    by_mean = contrast_scores(np.stack([mean] * 3), texts, encode, 50.0, rivals)
    by_object = contrast_scores(np.stack([objects] * 3), texts, encode, 50.0, rivals)
    assert by_mean[1] > -0.1  # the mixture looks as much like a blue star as like a red one
    assert by_object[0] == 0.0 and by_object[2] == 0.0  # each true text matches its object
    assert by_object[1] < -1.0  # "blue star": the star is red
