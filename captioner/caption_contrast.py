"""Caption contrast: does a clip prefer its caption over the same caption with one word swapped?

A raw CLIP cosine mixes two things: how well the caption fits the clip, and how "typical" the
caption's wording is (short generic texts such as ``"shape video"`` sit near every clip, long
specific ones far from all). The contrast score removes the wording: for each word of the
caption that has *rivals* — other words used in the same places in the training captions
(``red``: ``blue``, ``green``, …; :func:`build_rivals`) — it compares the caption with
its one-word variants in CLIP's own zero-shot softmax over {caption, variants}, at the model's
learned temperature. A word scores ``log(n · p)``, p the caption's share and n the number of
texts compared (0 = no preference, < 0 = a variant fits better); the caption scores its worst
word, capped at 0. A caption with no swappable word scores 0 (no evidence against it).

This is NegCLIP's word-swap hard negative turned into a test, with the swap vocabulary learnt
from the training captions, so it needs no word lists: the rivals are stored in the
checkpoint by ``train-clip`` (:func:`build_rivals`) and read by the scorer.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Iterable

import numpy as np

START, END = "<s>", "</s>"
WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")
MAX_RIVALS = 16  # per word, the rivals sharing the most places with it
RARE_SHARE = 0.1  # rivals used less than this share as often as the word's most used rival are typos
SAME_CLIP_SHARE = 0.5  # words on the same clip this often are synonyms or compatible, not rivals


def words_of(text: str) -> list[str]:
    """Lower-case words of ``text``, punctuation dropped: ``"Red star, on BLUE."`` → red star on blue."""
    return WORD.findall(text.lower())


def build_rivals(captions: Iterable[str], min_count: int = 3, min_shared: int = 2,
                 clips: Iterable[Iterable[str]] | None = None) -> dict[str, list[str]]:
    """Word → its rivals: words used in the same places (learnt from ``captions``).

    A place is the word before and the word after (``START`` / ``END`` at the edges). Two
    words are rivals when both occur at least ``min_count`` times (rare typos stay out) and
    they share at least ``min_shared`` places: colours share "a _ star", "on _" … with colours,
    shapes share "red _", "_ video" … with shapes. A rival used less than RARE_SHARE as often as
    the word's most used rival is a typo ("bule" beside "blue") and is dropped. Most shared
    places first, at most MAX_RIVALS.

    ``clips`` (each clip's captions), optional: rivals must exclude each other. Two words that
    describe the same clip — on at least ``SAME_CLIP_SHARE`` of the clips with two or more
    captions that use the rarer of them — are synonyms ("ball" in an alt text, "circle" in the
    clip's description; "grey" and "gray") or compatible ("star" and "background"), so a
    caption that says one is no evidence against the other: they are not rivals.
    """
    places: dict[str, set[str]] = defaultdict(set)
    counts: Counter = Counter()
    for text in captions:
        w = [START, *words_of(text), END]
        for i in range(1, len(w) - 1):
            places[w[i]].add(f"{w[i - 1]} {w[i + 1]}")
            counts[w[i]] += 1
    common = [w for w, n in counts.items() if n >= min_count]
    by_place: dict[str, list[str]] = defaultdict(list)
    for w in common:
        for place in places[w]:
            by_place[place].append(w)
    together = _same_clip_share(clips) if clips is not None else lambda a, b: 0.0
    rivals = {}
    for w in common:
        shared = Counter(r for place in places[w] for r in by_place[place]
                         if r != w and together(w, r) < SAME_CLIP_SHARE)
        ranked = sorted((r for r, n in shared.items() if n >= min_shared), key=lambda r: (-shared[r], r))
        top = max((counts[r] for r in ranked), default=0)
        ranked = [r for r in ranked if counts[r] >= RARE_SHARE * top]
        if ranked:
            rivals[w] = ranked[:MAX_RIVALS]
    return rivals


def _same_clip_share(clips: Iterable[Iterable[str]]):
    """(a, b) → the share of the clips using the rarer of a and b whose captions use both,
    over clips with two or more captions (one caption says each thing once)."""
    words = [set(w for t in texts for w in words_of(t)) for texts in map(list, clips) if len(texts) > 1]
    count = Counter(w for s in words for w in s)
    index: dict[str, set[int]] = defaultdict(set)
    for i, s in enumerate(words):
        for w in s:
            index[w].add(i)

    def share(a: str, b: str) -> float:
        rarer = min(count[a], count[b])
        return len(index[a] & index[b]) / rarer if rarer else 0.0
    return share


def variants(text: str, rivals: dict[str, list[str]]) -> list[list[str]]:
    """For each swappable word of ``text``: [the caption, its variants] as normalised strings.
    A rival that already occurs in the caption is not swapped in."""
    w = words_of(text)
    out = []
    for i, word in enumerate(w):
        others = [r for r in rivals.get(word, ()) if r not in w]
        if others:
            out.append([" ".join(w)] + [" ".join(w[:i] + [r] + w[i + 1:]) for r in others])
    return out


def contrast_scores(video: np.ndarray, texts: list[str | None], encode, logit_scale: float,
                    rivals: dict[str, list[str]]) -> list[float | None]:
    """Contrast score of each clip with its text: ``video`` (B, D) normalised clip embeddings,
    or (B, O, D), one per object of the clip, for a text that may name only one of them.

    With objects a text's logit is its best object's: "red ball" is judged against the red
    ball, not against the mean of a red ball and a blue box, where the blue box's colour
    pulls "blue ball" up. ``encode(list[str]) -> (T, D)`` normalised text embeddings (cached
    by the caller); None where the clip has no text.
    """
    out: list[float | None] = []
    for v, text in zip(video, texts):
        if not text:
            out.append(None)
            continue
        worst = 0.0
        objects = np.atleast_2d(v)  # (O, D)
        for group in variants(text, rivals):
            logits = logit_scale * (encode(group) @ objects.T).max(axis=1)  # (1 + rivals,)
            logits = logits - logits.max()
            share = float(np.exp(logits[0]) / np.exp(logits).sum())
            worst = min(worst, float(np.log(max(share * len(group), 1e-12))))
        out.append(worst)
    return out
