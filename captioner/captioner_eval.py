"""Caption quality: BLEU-4 and CIDEr (pycocoevalcap) and attribute accuracy on the synthetic world.

Attribute accuracy parses captions with a :class:`Vocabulary` (the synthetic world's words; the
caller builds it, since ``captioner`` does not import ``pipelines``), matches predicted objects
to true objects (the permutation with most agreeing attributes), and scores each slot: per
object colour, shape, size and motion; per shot background and camera. A missing object counts
every one of its attributes wrong.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

OBJECT_ATTRS = ("color", "shape", "size", "motion")
SHOT_ATTRS = ("background", "camera")
ATTRIBUTES = OBJECT_ATTRS + SHOT_ATTRS


def _words(text: str) -> list[str]:
    """Lower-case word tokens (the tokenisation both metrics and the parser use)."""
    return re.findall(r"[a-z0-9]+", text.lower())


def caption_scores(predictions: Mapping[str, str],
                   references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-4 and CIDEr of ``predictions`` against ``references`` (same keys)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    keys = sorted(predictions)
    if not keys:
        return {"bleu4": 0.0, "cider": 0.0}
    res = {k: [" ".join(_words(predictions[k])) or "empty"] for k in keys}
    gts = {k: [" ".join(_words(r)) for r in references[k]] for k in keys}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu4": float(bleu[3]), "cider": float(cider)}


@dataclass(frozen=True)
class Vocabulary:
    """Words of a synthetic world: names, plus phrase → value maps for motion and camera."""

    shapes: tuple[str, ...]
    colors: tuple[str, ...]
    sizes: tuple[str, ...]
    motions: Mapping[str, str]  # phrase in captions → motion name, e.g. "spins in place" → spinning
    backgrounds: tuple[str, ...]
    cameras: Mapping[str, str]  # phrase → camera, e.g. "the camera pans left" → "pan left"


def parse_caption(text: str, vocab: Vocabulary) -> dict[str, Any]:
    """Attributes named by a caption: ``{"objects": [...], "background", "camera"}``.

    The caption is split at " over a " into objects and scene; objects at " and a ". Words not
    in the vocabulary are ignored; an attribute the caption does not name is None.
    """
    low = " ".join(_words(text))
    objects_part, _, scene = low.partition(" over a ")
    objects = [_parse_object(chunk, vocab) for chunk in re.split(r"\band an?\b", objects_part)]
    objects = [o for o in objects if any(v is not None for v in o.values())]
    bg = re.search(r"(\w+) background", scene)
    camera = next((vocab.cameras[p] for p in vocab.cameras if p in low), None)
    background = bg.group(1) if bg and bg.group(1) in vocab.backgrounds else None
    return {"objects": objects, "background": background, "camera": camera}


def _parse_object(chunk: str, vocab: Vocabulary) -> dict[str, str | None]:
    words = chunk.split()

    def first(names: Sequence[str]) -> str | None:
        return next((w for w in words if w in names), None)

    motion = next((vocab.motions[p] for p in vocab.motions if f" {p}" in f" {chunk}"), None)
    return {"color": first(vocab.colors), "shape": first(vocab.shapes),
            "size": first(vocab.sizes), "motion": motion}


def match_objects(pred: Sequence[dict], true: Sequence[dict]) -> list[dict | None]:
    """For each true object, the predicted object matched to it (None: missing)."""
    padded = list(pred) + [None] * max(0, len(true) - len(pred))
    best, best_score = None, -1
    for perm in itertools.permutations(padded, len(true)):
        score = sum(_agree(p, t) for p, t in zip(perm, true))
        if score > best_score:
            best, best_score = list(perm), score
    return best or []


def _agree(pred: dict | None, true: dict) -> int:
    return 0 if pred is None else sum(pred.get(a) == true.get(a) for a in OBJECT_ATTRS)


def attribute_accuracy(predictions: Sequence[str], truths: Sequence[dict],
                       vocab: Vocabulary) -> dict[str, float]:
    """Per-attribute accuracy, ``overall`` (all slots), ``exact`` (shots fully right), ``n``."""
    correct = dict.fromkeys(ATTRIBUTES, 0)
    total = dict.fromkeys(ATTRIBUTES, 0)
    exact = 0
    for text, truth in zip(predictions, truths, strict=True):
        pred = parse_caption(text, vocab)
        hits = _slot_hits(pred, truth)
        for attr, ok in hits:
            correct[attr] += ok
            total[attr] += 1
        exact += all(ok for _, ok in hits) and len(pred["objects"]) == len(truth["objects"])
    out = {a: correct[a] / total[a] for a in ATTRIBUTES if total[a]}
    out["overall"] = sum(correct.values()) / max(1, sum(total.values()))
    out["exact"] = exact / max(1, len(truths))
    out["n"] = len(truths)
    return out


def _slot_hits(pred: dict, truth: dict) -> list[tuple[str, bool]]:
    """(attribute, correct) for every slot of one shot."""
    hits = []
    for p, t in zip(match_objects(pred["objects"], truth["objects"]), truth["objects"]):
        hits += [(a, p is not None and p.get(a) == t[a]) for a in OBJECT_ATTRS]
    hits += [(a, pred[a] == truth[a]) for a in SHOT_ATTRS]
    return hits
