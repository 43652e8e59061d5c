"""Captioner quality on the synthetic world: attribute accuracy and CIDEr, captioner vs alt text.

    python benchmarks/captioner_quality.py [--videos 400] [--minutes 10] [--write-results]
    python benchmarks/captioner_quality.py --quick      # ~1 minute: the loss falls, captions parse

Renders a world, cuts its clean shots into clips (ground truth from truth.json), and holds out
shots: every shot containing one of a few colour×shape pairs (never seen in training), plus a
random tenth of the rest. The ground-truth captions of the training shots play the human-written
seed set. The tiny captioner trains for at most ``--minutes`` (time reversal and left-right /
top-bottom flips augment it, swapping the synthetic world's direction words); its greedy
captions of the held-out shots are scored against the ground truth (attributes parsed with the
synthetic vocabulary; BLEU-4 and CIDEr), next to the alt text those shots came with.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from captioner.captioner_data import CaptionItem, shots_from_truth  # noqa: E402
from captioner.captioner_eval import attribute_accuracy, caption_scores  # noqa: E402
from captioner.captioner_train import train_captioner  # noqa: E402
from captioner.registry import load_config  # noqa: E402
from pipelines.cli_caption import REVERSE_SWAPS, synth_vocabulary  # noqa: E402
from pipelines.synth import render_world  # noqa: E402
from pipelines.synth.world import COLORS, SHAPES  # noqa: E402

HFLIP_SWAPS = {"left": "right", "right": "left"}  # mirroring a synthetic shot left-right
VFLIP_SWAPS = {"up": "down", "down": "up"}  # … and top-bottom (pans stay horizontal)
RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Captioner quality (synthetic world)"


def heldout_pairs(seed: int, n_pairs: int) -> set[tuple[str, str]]:
    """``n_pairs`` colour×shape pairs, each colour at most once, shapes spread evenly."""
    colors = [str(c) for c in np.random.default_rng(seed).permutation(list(COLORS))[:n_pairs]]
    return {(c, SHAPES[i % len(SHAPES)]) for i, c in enumerate(colors)}


def split(items: list[CaptionItem], pairs: set, seed: int, seen_fraction: float = 0.1):
    """(train, test_unseen, test_seen): unseen shots contain a held-out colour×shape pair."""
    def unseen(it: CaptionItem) -> bool:
        return any((o["color"], o["shape"]) in pairs for o in it.attributes["objects"])

    rest = [it for it in items if not unseen(it)]
    perm = np.random.default_rng(seed).permutation(len(rest))
    n_seen = max(1, int(round(seen_fraction * len(rest))))
    seen = [rest[i] for i in sorted(perm[:n_seen])]
    train = [rest[i] for i in sorted(perm[n_seen:])]
    return train, [it for it in items if unseen(it)], seen


def score(name: str, texts: list[str], items: list[CaptionItem]) -> dict:
    """Attribute accuracy and BLEU-4/CIDEr of ``texts`` against the items' ground truth."""
    vocab = synth_vocabulary()
    acc = attribute_accuracy(texts, [it.attributes for it in items], vocab)
    refs = {str(i): [it.caption] for i, it in enumerate(items)}
    caps = caption_scores({str(i): t for i, t in enumerate(texts)}, refs)
    words = float(np.mean([len(t.split()) for t in texts])) if texts else 0.0
    return {"name": name, **acc, **caps, "words": words}


def run(args) -> dict:
    work = Path(args.work)
    world = work / f"world_v{args.videos}_s{args.seed}_d{args.duration:g}_m{args.max_side}"
    if not (world / "truth.json").exists():
        render_world(world, n_videos=args.videos, seed=args.seed, duration_s=args.duration,
                     max_side=args.max_side)
    items = shots_from_truth(world, world / "clips")
    train, unseen, seen = split(items, heldout_pairs(args.seed, args.heldout_pairs), args.seed)
    test = unseen + seen
    overrides = json.loads(args.override) if args.override else {}
    train_over = {"max_minutes": args.minutes, "reverse_swaps": REVERSE_SWAPS,
                  "hflip_swaps": HFLIP_SWAPS, "vflip_swaps": VFLIP_SWAPS,
                  "num_threads": args.threads,
                  **overrides.pop("train", {})}
    config = load_config(args.config, train=train_over, **overrides)
    run_dir = work / f"run-{args.config}-{time.strftime('%Y%m%d-%H%M%S')}"
    res = train_captioner(train, test, config, run_dir, vocabulary=synth_vocabulary(),
                          resume=False, progress=not args.no_progress)
    preds = res.predictions
    rows = [score("captioner (all held-out)", preds, test),
            score("captioner (unseen colour×shape)", preds[: len(unseen)], unseen),
            score("captioner (seen combinations)", preds[len(unseen):], seen),
            score("alt text (all held-out)", [it.alt_text or "" for it in test], test)]
    examples = [(it.caption, it.alt_text, p) for it, p in list(zip(test, preds))[:6]]
    return {"rows": rows, "train_minutes": res.train_seconds / 60,
            "wall_minutes": res.wall_seconds / 60, "steps": res.step,
            "n_train": len(train), "n_unseen": len(unseen), "n_seen": len(seen),
            "history": res.history, "examples": examples, "run_dir": str(run_dir),
            "args": vars(args), "config": config.model_dump()}


def report(out: dict) -> str:
    a = out["args"]
    lines = [SECTION, "",
             f"`python benchmarks/captioner_quality.py --videos {a['videos']} --minutes "
             f"{a['minutes']:g}` — world: {a['videos']} videos × {a['duration']:g} s at ≤ "
             f"{a['max_side']} px (seed {a['seed']}); train {out['n_train']} clean shots, "
             f"held out {out['n_unseen']} shots with unseen colour×shape pairs + {out['n_seen']} "
             f"random seen-combination shots. Config `{a['config']}`, {out['steps']} steps: "
             f"{out['train_minutes']:.1f} min of optimizer steps ({out['wall_minutes']:.1f} min "
             f"with evaluations) on this machine's CPU (2 shared cores, {a['threads']} torch "
             f"thread).", "",
             "| captions | n | overall | colour | shape | size | motion | background | camera "
             "| exact | BLEU-4 | CIDEr | words |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        cells = [r["name"], str(r["n"])] + [f"{100 * r[k]:.1f}%" for k in
                 ("overall", "color", "shape", "size", "motion", "background", "camera", "exact")]
        cells += [f"{r['bleu4']:.3f}", f"{r['cider']:.3f}", f"{r['words']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Examples (ground truth / alt text / captioner):", ""]
    lines += [f"- {gt} / `{alt}` / **{p}**" for gt, alt, p in out["examples"][:3]]
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path = RESULTS, section: str = SECTION) -> None:
    """Replace (or append) ``section`` in RESULTS.md, up to the next ``## `` heading."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    start = old.find(section)
    if start < 0:
        new = old.rstrip() + "\n\n" + text
    else:
        nxt = old.find("\n## ", start + len(section))
        new = old[:start] + text + (old[nxt + 1:] if nxt >= 0 else "")
    path.write_text(new)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--max-side", type=int, default=160)
    p.add_argument("--heldout-pairs", type=int, default=8)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--config", default="tiny")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is fastest on an oversubscribed shared CPU)")
    p.add_argument("--override", default=None, help='JSON config overrides, e.g. {"train": {"lr": 1e-3}}')
    p.add_argument("--work", default="/tmp/vidcorpus-captioner-bench")
    p.add_argument("--quick", action="store_true", help="small world, ~1 minute of training")
    p.add_argument("--write-results", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.videos, args.duration, args.minutes, args.max_side = 12, 6.0, 1.0, 128
    out = run(args)
    text = report(out)
    print(text)
    Path(out["run_dir"], "benchmark.json").write_text(json.dumps(out, indent=1, default=str))
    if args.write_results:
        write_section(text)


if __name__ == "__main__":
    main()
