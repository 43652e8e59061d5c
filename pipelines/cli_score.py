"""CLI commands of scoring and datasets: ``train-clip``, ``score``, ``filter``, ``dataset …``.

Registered into the ``vidcorpus`` app by ``pipelines.cli`` (``register(app)``). Each command maps
its options onto a config object and calls the library; errors in input become one line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from pipelines.cli_util import ROOT_HELP, fail, format_table, open_catalog

RootOpt = typer.Option("corpus", "--root", "-r", envvar="VIDCORPUS_ROOT", help=ROOT_HELP)
ModelOpt = typer.Option("vidcorpus-clip-tiny", "--clip-model", help="open_clip model name (ViT-B-32, ViT-L-14, vidcorpus-clip-tiny …).")
PretrainedOpt = typer.Option(None, "--clip-pretrained", help="Local weights file (never downloaded).")
ThreadsOpt = typer.Option(None, "--threads", min=1, help="torch CPU threads (1 is fastest on a busy small machine).")

dataset_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                          help="Datasets: SQL selections written as WebDataset shards.")


def train_clip(root: str = RootOpt,
               out: Path = typer.Option(..., "--out", "-o", help="Checkpoint file to write."),
               where: Optional[str] = typer.Option(None, "--where", help="SQL over clips_v choosing training clips."),
               clip_model: str = ModelOpt, clip_pretrained: Optional[str] = PretrainedOpt,
               sources: list[str] = typer.Option([], "--caption-source", help="Caption sources to train on (repeatable; default all)."),
               steps: int = typer.Option(600, "--steps", min=1), batch_size: int = typer.Option(64, "--batch-size", min=2),
               lr: Optional[float] = typer.Option(None, "--lr", help="Default 2e-3 from scratch, 2e-5 fine-tuning."),
               max_seconds: Optional[float] = typer.Option(None, "--max-seconds", help="Stop when this much time is spent."),
               frames_per_clip: int = typer.Option(8, "--frames-per-clip", min=1),
               views: Optional[str] = typer.Option(None, "--views", help="What the tower sees of a frame, comma-separated out of frame, crops (object crops), objects (the objects cut out of them), silhouettes (default: objects,silhouettes from scratch, frame when fine-tuning)."),
               view_source: Optional[int] = typer.Option(None, "--view-source", min=8, help="Decode frames this large for the views (default: 128 px or twice the model's input, with object views)."),
               folds: Optional[int] = typer.Option(None, "--folds", min=1, help="Cross-fit K models, each without one fold of the clips: `score` judges every training clip's captions with the model that never saw it (default from scratch: 2 from 400 clips on, else 1; fine-tuning: 1; each fold gets 1/K of --steps and --max-seconds)."),
               seed: int = typer.Option(0, "--seed"), threads: Optional[int] = ThreadsOpt) -> None:
    """Fit a CLIP (from scratch, or fine-tune --clip-pretrained) on captioned clips with a contrastive loss.

    The checkpoint records the view recipe and the word-swap vocabulary of the captions; `score`
    reads both back (clip_text_contrast)."""
    from pipelines.jobs.kinds import TrainClipJobSpec
    open_catalog(root)
    try:
        spec = TrainClipJobSpec(root=root, out=str(out), where=where, clip_model=clip_model,
                                clip_pretrained=clip_pretrained, caption_sources=sources, steps=steps,
                                batch_size=batch_size, lr=lr, max_seconds=max_seconds,
                                frames_per_clip=frames_per_clip, seed=seed, threads=threads,
                                views=[v.strip() for v in views.split(",") if v.strip()] if views else None,
                                view_source=view_source, folds=folds)
        result = spec.run()
    except ValueError as e:
        fail(str(e))
    typer.echo(spec.summary(result))


def score(root: str = RootOpt,
          config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML: a `kind: score` spec or its config."),
          clip_model: Optional[str] = typer.Option(None, "--clip-model", help="open_clip model name."),
          clip_pretrained: Optional[str] = PretrainedOpt,
          where: Optional[str] = typer.Option(None, "--where", help="SQL over clips_v choosing clips."),
          rescore: bool = typer.Option(False, "--rescore", help="Also clips this model already scored."),
          negative: list[str] = typer.Option([], "--negative-prompt", help="Defect prompt (repeatable)."),
          dedup_threshold: Optional[float] = typer.Option(None, "--dedup-threshold", help="Near-duplicate when the mean of CLIP and pixel-layout cosines reaches this (default 0.80)."),
          runner: Optional[str] = typer.Option(None, "--runner", help="ray (default) or local."),
          address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address."),
          threads: Optional[int] = ThreadsOpt) -> None:
    """Score clips: frames once → motion/black/frozen → CLIP embedding, clip_text, neg_* → dedup."""
    from pipelines.score.job import run_score
    open_catalog(root)
    overrides = {k: v for k, v in dict(clip_model=clip_model, clip_pretrained=clip_pretrained,
                                       where=where, dedup_threshold=dedup_threshold,
                                       threads=threads).items() if v is not None}
    overrides.update({"rescore": True} if rescore else {})
    overrides.update({"negative_prompts": tuple(negative)} if negative else {})
    try:
        cfg = _score_config(config, overrides, runner, address)
        result = run_score(root, cfg)
    except ValueError as e:
        fail(str(e))
    typer.echo(result.text())


def _score_config(path: Optional[Path], overrides: dict, runner: str | None, address: str | None):
    """The ScoreConfig of a YAML file (full spec or config section) with CLI overrides on top."""
    from pipelines.jobspec import load_yaml, validate
    from pipelines.score.job import ScoreConfig
    data = load_yaml(path) if path else {}
    if data.get("kind") not in (None, "score"):
        raise ValueError(f"{path}: kind {data['kind']!r} is not a score spec")
    data = data.get("config", {k: v for k, v in data.items() if k != "kind"})
    data = {**data, **overrides}
    run = {k: v for k, v in (("kind", runner), ("address", address)) if v}
    if run:
        data["runner"] = {**data.get("runner", {}), **run}
    return validate(ScoreConfig, data, f"score config {path or '(options)'}")


def filter_clips(root: str = RootOpt,
                 rules: Optional[Path] = typer.Option(None, "--rules", help="YAML rules file (default: the built-in rules).")) -> None:
    """Apply named SQL rules over clips_v in order; print and record the funnel."""
    from pipelines.score.filters import RuleError
    from pipelines.score.job import run_filter
    open_catalog(root)
    try:
        result = run_filter(root, rules_path=str(rules) if rules else None)
    except RuleError as e:
        fail(str(e))
    typer.echo(result.text())


@dataset_app.command("create")
def dataset_create(name: str = typer.Argument(..., help="Dataset name (letters, digits, _ and -)."),
                   root: str = RootOpt,
                   where: Optional[str] = typer.Option(None, "--where", help="SQL condition over corpus_v."),
                   sql: Optional[str] = typer.Option(None, "--sql", help='A query returning clip_id, e.g. "SELECT clip_id FROM clips_v …".'),
                   include_rejected: bool = typer.Option(False, "--include-rejected", help="Keep rejected clips too."),
                   max_count: int = typer.Option(10_000, "--max-count", min=1, help="Samples per shard at most."),
                   max_bytes: int = typer.Option(1_000_000_000, "--max-bytes", min=1, help="Bytes per shard at most.")) -> None:
    """Write the clips a SQL selection picks as WebDataset shards into ROOT/shards/NAME."""
    from pipelines.dataset import DatasetError, DatasetSpec, create_dataset
    catalog = open_catalog(root)
    try:
        spec = DatasetSpec(name, where=where, sql=sql, include_rejected=include_rejected,
                           max_bytes=max_bytes, max_count=max_count)
        manifest = create_dataset(catalog, spec)
    except DatasetError as e:
        fail(str(e))
    extra = manifest["extra"]
    typer.echo(f"dataset {name}: {manifest['n_samples']} samples in {manifest['n_shards']} shard(s), "
               f"{manifest['total_bytes']} bytes; {extra['without_caption']} without caption, "
               f"{len(extra['missing_media'])} missing media; catalog state {extra['catalog_state']['hash'][:12]}")


@dataset_app.command("list")
def dataset_list(root: str = RootOpt) -> None:
    """List datasets, newest first."""
    from pipelines.dataset import list_datasets
    typer.echo(format_table(list_datasets(open_catalog(root))))


@dataset_app.command("show")
def dataset_show(name: str = typer.Argument(...), root: str = RootOpt) -> None:
    """Show a dataset: its definition, counts, shards and caption sources."""
    from pipelines.dataset import DatasetError, show_dataset
    try:
        info = show_dataset(open_catalog(root), name)
    except (DatasetError, ValueError) as e:
        fail(str(e))
    manifest = info["manifest"]
    summary = {"dataset": name, "n_samples": manifest["n_samples"], "n_shards": manifest["n_shards"],
               "total_bytes": manifest["total_bytes"], "created_at": manifest["created_at"],
               "definition": manifest["extra"]["definition"],
               "catalog_state": manifest["extra"]["catalog_state"]["hash"],
               "shards": [s["name"] for s in manifest["shards"]], "caption_sources": info["caption_sources"]}
    typer.echo(json.dumps(summary, indent=2, default=str))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``vidcorpus`` app."""
    app.command("train-clip")(train_clip)
    app.command("score")(score)
    app.command("filter")(filter_clips)
    app.add_typer(dataset_app, name="dataset")
