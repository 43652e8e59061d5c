"""The ``vidcorpus`` command line. Thin: each command maps options onto a config and calls a library."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from pipelines.cli_util import ROOT_HELP, fail, open_catalog, write_result

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="vidcorpus: build text-video training corpora (ingest, shot-split, score, "
                       "caption, query with SQL, write shards, train).")

RootOpt = typer.Option("corpus", "--root", "-r", envvar="VIDCORPUS_ROOT", help=ROOT_HELP)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


@app.command()
def synth(out: Path = typer.Argument(..., help="Directory to write the videos and truth.json into."),
          videos: int = typer.Option(24, "--videos", "-n", min=1, help="Number of videos."),
          seed: int = typer.Option(0, "--seed", "-s", help="Random seed (same seed, same world)."),
          duration: float = typer.Option(10.0, "--duration", min=1.0, help="Seconds per video."),
          max_side: int = typer.Option(320, "--max-side", min=32, help="Longest side in pixels.")) -> None:
    """Render a synthetic world: multi-shot videos with exact ground truth (truth.json)."""
    from pipelines.synth import render_world
    truth = render_world(out, n_videos=videos, seed=seed, duration_s=duration, max_side=max_side)
    n_shots = sum(len(v["shots"]) for v in truth["videos"])
    n_broken = sum(1 for v in truth["videos"] if v["broken"])
    typer.echo(f"wrote {len(truth['videos'])} videos ({n_shots} shots, {n_broken} broken on purpose) "
               f"and {out / 'truth.json'}")


@app.command()
def sql(query: str = typer.Argument(..., help='One read-only query, e.g. "SELECT count(*) FROM clips".'),
        root: str = RootOpt,
        fmt: str = typer.Option("table", "--format", "-f", help="table, csv, json or parquet."),
        out: Optional[str] = typer.Option(None, "--out", "-o", help="Write the result to FILE.")) -> None:
    """Query the catalog with DuckDB SQL (read-only).

    Tables: videos, clips, scores, embeddings, captions, rejections, datasets, shard_samples, jobs.
    Views: clips_v (clips + one column per score + rejection reasons), corpus_v (clips_v + alt_text,
    caption, caption_source). Writes, ATTACH, INSTALL/LOAD, COPY and files outside the catalog are refused.
    """
    from storage import SQLError
    if fmt not in ("table", "csv", "json", "parquet"):
        fail(f"unknown --format {fmt!r}: use table, csv, json or parquet")
    catalog = open_catalog(root)
    try:
        result = catalog.query(query)
    except SQLError as e:
        fail(str(e))
    write_result(result, fmt, out)


@app.command()
def tables(root: str = RootOpt) -> None:
    """List catalog tables and views with their schemas, row counts and any corrupt parts."""
    from storage.tables_report import tables_report
    typer.echo(tables_report(open_catalog(root)))


@app.command()
def ingest(sources: list[str] = typer.Argument(None, help="Directories, globs, text files of URIs, or URLs (s3://…)."),
           root: str = RootOpt,
           config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML job spec or ingest config."),
           runner: Optional[str] = typer.Option(None, "--runner", help="ray (default) or local."),
           address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address."),
           detector: Optional[str] = typer.Option(None, "--detector", help="hybrid, transnetv2, adaptive, content.")) -> None:
    """Ingest raw videos: hash, probe, quarantine bad files, detect shots, extract clips.

    Re-running on the same inputs skips finished videos; a killed job resumes without duplicates.
    """
    from pipelines.ingest.job import run_ingest
    from pipelines.jobspec import IngestJobSpec, JobSpecError, load_ingest_spec
    try:
        spec = load_ingest_spec(config) if config else IngestJobSpec()
    except JobSpecError as e:
        fail(str(e))
    srcs = list(sources or spec.sources)
    if not srcs:
        fail("no sources: pass SRC arguments or list them under `sources:` in --config")
    cfg = spec.config
    overrides = {k: v for k, v in (("kind", runner), ("address", address)) if v}
    if overrides:
        cfg = cfg.model_copy(update={"runner": cfg.runner.model_copy(update=overrides)})
    if detector:
        cfg = cfg.model_copy(update={"detector": cfg.detector.model_copy(update={"name": detector})})
    root_url = spec.root if (spec.root and root == "corpus") else root
    try:
        result = run_ingest(srcs, root_url, cfg, storage_options=spec.storage_options or None)
    except ValueError as e:
        fail(str(e))
    typer.echo(result.text(cfg.runner.num_cpus or __import__("os").cpu_count() or 1))


captions_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                           help="Bring existing text (alt text, human seed captions) into the captions table.")
app.add_typer(captions_app, name="captions")


@captions_app.command("import")
def captions_import(file: Path = typer.Argument(..., help="CSV, JSONL or Parquet: `text` plus clip_id, video_id or uri."),
                    root: str = RootOpt,
                    source: str = typer.Option("alt-text", "--source", help="alt-text, original (human seed captions) …"),
                    model: str = typer.Option("import", "--model", help="Where the text came from (free text).")) -> None:
    """Import captions; text keyed by video (video_id or uri) goes to every clip of that video."""
    from pipelines.captions_import import CaptionImportError, import_captions
    try:
        result = import_captions(open_catalog(root), file, source=source, model=model)
    except CaptionImportError as e:
        fail(str(e))
    typer.echo(result.text(source))


@captions_app.command("synth")
def captions_synth(world: Path = typer.Argument(..., help="A world rendered by `vidcorpus synth`."),
                   root: str = RootOpt,
                   seed_fraction: float = typer.Option(0.5, "--seed-fraction", min=0.0, max=1.0,
                                                       help="Share of videos whose true captions become the 'original' seed set."),
                   seed: int = typer.Option(0, "--seed")) -> None:
    """Load a synthetic world's per-shot alt text, and true captions for a seed subset of videos."""
    from pipelines.synth.match import load_world_captions
    if not (world / "truth.json").exists():
        fail(f"{world}: no truth.json; render a world with `vidcorpus synth {world}` first")
    counts = load_world_captions(open_catalog(root), world, seed_fraction=seed_fraction, seed=seed)
    typer.echo(f"{counts['alt_text']} alt-text captions; {counts['original']} 'original' seed captions "
               f"from {counts['seed_videos']} videos")


def _register_plugins() -> None:
    """Command groups that live beside their library code register themselves here."""
    import importlib
    for name in PLUGINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.register(app)


PLUGINS = ("pipelines.cli_score", "pipelines.cli_caption", "pipelines.cli_generate", "pipelines.cli_jobs")
_register_plugins()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
