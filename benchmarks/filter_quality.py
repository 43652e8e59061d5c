"""Filter quality on the synthetic world: does scoring + filtering remove the bad shots only?

    .venv/bin/python benchmarks/filter_quality.py --videos 200 --seed 2 [--out results.json]

1. render a world (``pipelines.synth.render_world``) and ingest it (local runner) into a template
   root, once; every run starts from a fresh copy of it, so no score, rejection or model of an
   earlier run (train-clip trains on non-rejected clips only) leaks into this one;
2. map clips to truth shots (``pipelines.synth.match``) and load alt text + seed captions;
3. ``train-clip``: a tiny CLIP from scratch on the clips whose id starts with 0-b (75%),
   timed — it must fit in 3 minutes on this 2-core machine;
4. score every clip with it (frames, pixel stats, CLIP, dedup), then filter with the defaults;
5. report: AUC of ``clip_text`` for true vs deliberately wrong alt text on HELD-OUT shots, and
   per defect kind (black, frozen, noise, duplicate, wrong alt text) the recall (share of such
   shots rejected, by any rule) and the precision of the rule meant for it (share of its
   rejections that have that defect), plus the share of good shots kept.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HELD_OUT = "substr(clip_id, 1, 1) >= 'c'"  # clip ids are hex: 4 of 16 leading digits, 25%
RULE_FOR = {"black": "black", "frozen": "frozen", "noise": "noise", "duplicate": "duplicate",
            "wrong_alt_text": "low_clip_score"}


def auc(pos: list[float], neg: list[float]) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float((p > n).mean() + 0.5 * (p == n).mean())


def build_corpus(args, template: Path, world: Path, root: Path) -> None:
    """Render, ingest and caption the world into ``template`` once; ``root`` = a fresh copy of it."""
    from pipelines.ingest.config import IngestConfig, RunnerConfig
    from pipelines.ingest.job import run_ingest
    from pipelines.synth import render_world
    from pipelines.synth.match import load_world_captions
    from storage import Catalog, CorpusRoot
    if not (world / "truth.json").exists():
        render_world(world, n_videos=args.videos, seed=args.seed, duration_s=args.duration,
                     max_side=args.max_side, progress=False)
    ready = template / "READY"
    if not ready.exists():
        shutil.rmtree(template, ignore_errors=True)
        catalog = Catalog(CorpusRoot.open(template, create=True))
        run_ingest([str(world)], str(template), IngestConfig(runner=RunnerConfig(kind="local")))
        print(load_world_captions(catalog, world, seed_fraction=args.seed_fraction, seed=args.seed))
        ready.write_text("ingested and captioned\n")
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(template, root, ignore=shutil.ignore_patterns("READY"))


def train(args, root: Path) -> dict:
    from captioner.clip_model import TINY, TrainClipConfig, recipe_defaults
    from pipelines.score.train import run_train_clip
    recipe = recipe_defaults(TINY, None, args.views.split(",") if args.views else None)
    config = TrainClipConfig(steps=args.steps, batch_size=args.batch_size, threads=args.threads,
                             max_seconds=args.max_train_seconds, seed=args.seed, **recipe)
    t0 = time.perf_counter()
    result = run_train_clip(str(root), str(root / "models" / "clip-tiny.pt"), config,
                            where=f"NOT ({HELD_OUT})")
    return {"train_s": time.perf_counter() - t0, "steps": result.steps, "fit_s": result.seconds,
            "final_loss": result.final_loss}


def score_and_filter(args, root: Path) -> dict:
    from pipelines.ingest.config import RunnerConfig
    from pipelines.score.job import ScoreConfig, run_filter, run_score
    given = {} if args.dedup_threshold is None else {"dedup_threshold": args.dedup_threshold}
    config = ScoreConfig(clip_pretrained=str(root / "models" / "clip-tiny.pt"), threads=args.threads,
                         runner=RunnerConfig(kind="local"), **given)
    t0 = time.perf_counter()
    scored = run_score(str(root), config)
    print(scored.text())
    filtered = run_filter(str(root))
    print(filtered.text())
    return {"score_s": time.perf_counter() - t0, "funnel": filtered.funnel.as_dict()}


def defect_kinds(shot: dict) -> set[str]:
    kinds = set(shot["defects"])
    return kinds | {"wrong_alt_text"} if shot.get("alt_text_wrong") else kinds


def evaluate(root: Path, world: Path) -> dict:
    """AUC on held-out shots and per-defect precision / recall of the filter."""
    from pipelines.synth.match import match_clips_to_truth
    from storage import Catalog, CorpusRoot
    catalog = Catalog(CorpusRoot.open(root))
    matches = match_clips_to_truth(catalog, world)
    rows = {r["clip_id"]: r for r in catalog.query(
        f"SELECT clip_id, clip_text, clip_text_contrast, rejection_reasons, {HELD_OUT} AS held_out "
        "FROM clips_v").to_pylist()}
    out = {"clips": len(rows), "matched": len(matches), "auc": _auc(matches, rows),
           "auc_contrast": _auc(matches, rows, "clip_text_contrast")}
    reasons = {c: set((r["rejection_reasons"] or "").split(",")) - {""} for c, r in rows.items()}
    out["per_defect"] = {kind: _defect_metrics(kind, matches, reasons) for kind in RULE_FOR}
    good = [c for c, m in matches.items() if not defect_kinds(m.shot)]
    bad = [c for c, m in matches.items() if defect_kinds(m.shot)]
    out["good_kept"] = sum(not reasons[c] for c in good) / max(1, len(good))
    out["bad_removed"] = sum(bool(reasons[c]) for c in bad) / max(1, len(bad))
    out["n_good"], out["n_bad"] = len(good), len(bad)
    out["good_rejected_by"] = dict(Counter(r for c in good for r in reasons[c]))
    return out


def _auc(matches: dict, rows: dict, column: str = "clip_text") -> dict:
    """``column`` of true vs wrong alt text, held-out shots that show objects."""
    held = [(rows[c][column], m.shot["alt_text_wrong"]) for c, m in matches.items()
            if rows[c]["held_out"] and m.shot["attributes"]["objects"] and rows[c][column] is not None]
    pos = [s for s, wrong in held if not wrong]
    neg = [s for s, wrong in held if wrong]
    return {"auc": auc(pos, neg) if pos and neg else None, "n_true": len(pos), "n_wrong": len(neg)}


def _defect_metrics(kind: str, matches: dict, reasons: dict) -> dict:
    have = [c for c, m in matches.items() if kind in defect_kinds(m.shot)]
    rule = RULE_FOR[kind]
    by_rule = [c for c in matches if rule in reasons[c]]
    return {"shots": len(have), "recall": sum(bool(reasons[c]) for c in have) / max(1, len(have)),
            "rule": rule, "rule_rejected": len(by_rule),
            "precision": sum(kind in defect_kinds(matches[c].shot) for c in by_rule) / max(1, len(by_rule)),
            "precision_any_defect": sum(bool(defect_kinds(matches[c].shot)) for c in by_rule) / max(1, len(by_rule))}


def markdown(result: dict) -> str:
    lines = ["| defect | shots | recall (rejected by any rule) | rule | rejected by rule | precision | precision (any defect) |",
             "|---|---|---|---|---|---|---|"]
    for kind, m in result["per_defect"].items():
        lines.append(f"| {kind} | {m['shots']} | {m['recall']:.3f} | `{m['rule']}` | {m['rule_rejected']} | "
                     f"{m['precision']:.3f} | {m['precision_any_defect']:.3f} |")
    a, c = result["auc"], result["auc_contrast"]
    lines += ["", f"- held-out AUC, true vs wrong alt text: clip_text_contrast **{c['auc'] or float('nan'):.3f}**, "
                  f"raw cosine clip_text {a['auc']:.3f} ({a['n_true']} true, {a['n_wrong']} wrong)",
              f"- bad shots removed: **{result['bad_removed']:.3f}** of {result['n_bad']}; good shots kept: "
              f"**{result['good_kept']:.3f}** of {result['n_good']} (good ones lost to: {result['good_rejected_by']})",
              f"- train-clip: {result['train']['steps']} steps in {result['train']['train_s']:.0f}s "
              f"(fit {result['train']['fit_s']:.0f}s); score + filter {result['score']['score_s']:.0f}s"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--max-side", type=int, default=160)
    ap.add_argument("--seed-fraction", type=float, default=0.5, help="Videos with a truth 'original' caption.")
    ap.add_argument("--steps", type=int, default=6000, help="Step cap (all folds together); the time budget binds first.")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-train-seconds", type=float, default=150.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--views", default=None, help="Comma-separated CLIP views (default: train-clip's).")
    ap.add_argument("--dedup-threshold", type=float, default=None, help="Default: the score job's.")
    ap.add_argument("--work", type=Path, default=Path("/tmp/vidcorpus-filter-quality"))
    ap.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    name = f"{args.videos}-{args.seed}"
    world, root = args.work / f"world-{name}", args.work / f"root-{name}"
    build_corpus(args, args.work / f"ingested-{name}", world, root)
    result = {"train": train(args, root), "score": score_and_filter(args, root)}
    result.update(evaluate(root, world))
    print(json.dumps(result, indent=2, default=str))
    print(markdown(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
