"""Caption quality of an ingested synthetic world: catalog captions scored against truth.json.

Clips are joined to their truth shot (``pipelines.synth.match``); clean shots whose video is not
in the human seed set (no ``original`` caption) are the held-out clips. Each caption source is
scored on them: attribute accuracy (synthetic vocabulary), BLEU-4 and CIDEr against the
ground-truth caption, and mean length, next to the web alt text.
"""
from __future__ import annotations

import os
from typing import Any

from captioner.captioner_eval import attribute_accuracy, caption_scores
from pipelines.cli_caption import synth_vocabulary
from pipelines.synth.match import match_clips_to_truth


def caption_quality(catalog, world_dir: str | os.PathLike, sources: list[str]) -> list[dict[str, Any]]:
    """One row per source (plus ``alt-text``) scored on the held-out clean clips."""
    matches = {k: m for k, m in match_clips_to_truth(catalog, world_dir).items()
               if not m.shot["defects"] and m.shot["attributes"]["objects"]}
    rows = catalog.query("SELECT clip_id, source, text FROM captions").to_pylist()
    seeds = {r["clip_id"] for r in rows if r["source"] == "original"}
    held = sorted(k for k in matches if k not in seeds)
    texts: dict[str, dict[str, str]] = {}
    for r in rows:
        texts.setdefault(r["source"], {})[r["clip_id"]] = r["text"] or ""
    out = []
    for source in [*sources, "alt-text"]:
        have = [k for k in held if k in texts.get(source, {})]
        preds = [texts[source][k] for k in have]
        acc = attribute_accuracy(preds, [matches[k].shot["attributes"] for k in have],
                                 synth_vocabulary())
        refs = {k: [matches[k].shot["caption"]] for k in have}
        scores = caption_scores(dict(zip(have, preds)), refs)
        words = sum(len(p.split()) for p in preds) / max(1, len(preds))
        out.append({"source": source, **acc, **scores, "words": words})
    return out


def caption_quality_text(rows: list[dict[str, Any]]) -> str:
    """A small aligned table of :func:`caption_quality` rows."""
    head = f"{'source':34} {'n':>4} {'attr acc':>8} {'colour':>6} {'shape':>6} {'motion':>6} " \
           f"{'camera':>6} {'CIDEr':>6} {'words':>5}"
    lines = [head]
    for r in rows:
        lines.append(f"{r['source'][:34]:34} {r['n']:>4} {100 * r['overall']:>7.1f}% "
                     f"{100 * r.get('color', 0):>5.1f}% {100 * r.get('shape', 0):>5.1f}% "
                     f"{100 * r.get('motion', 0):>5.1f}% {100 * r.get('camera', 0):>5.1f}% "
                     f"{r['cider']:>6.3f} {r['words']:>5.1f}")
    return "\n".join(lines)
