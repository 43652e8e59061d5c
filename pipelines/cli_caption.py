"""CLI commands of the captioner: ``train-captioner`` and ``caption`` (registered by pipelines.cli)."""
from __future__ import annotations

from typing import Optional

import typer

from pipelines.cli_util import ROOT_HELP, fail

# Time reversal of a synthetic clip swaps these words in its caption (training augmentation).
REVERSE_SWAPS = {"left": "right", "right": "left", "up": "down", "down": "up",
                 "grows": "shrinks", "shrinks": "grows"}


def synth_vocabulary():
    """The synthetic world's vocabulary, for attribute accuracy (captioner_eval.Vocabulary)."""
    from captioner.captioner_eval import Vocabulary
    from pipelines.synth.text import CAMERA_PHRASES, MOTION_PHRASES
    from pipelines.synth.world import BACKGROUNDS, COLORS, SHAPES, SIZES

    return Vocabulary(shapes=tuple(SHAPES), colors=tuple(COLORS), sizes=tuple(SIZES),
                      motions={p: m for m, p in MOTION_PHRASES.items()},
                      backgrounds=tuple(BACKGROUNDS),
                      cameras={p: c for c, p in CAMERA_PHRASES.items()})


def register(app: typer.Typer) -> None:
    app.command("train-captioner")(train_captioner_cmd)
    app.command("caption")(caption_cmd)


def train_captioner_cmd(
        root: str = typer.Option("corpus", "--root", "-r", envvar="VIDCORPUS_ROOT", help=ROOT_HELP),
        dataset: Optional[str] = typer.Option(None, "--dataset", help="Train on this dataset's shards."),
        where: Optional[str] = typer.Option(None, "--where", help='SQL filter on clips_v, e.g. "duration_s > 1".'),
        config: str = typer.Option("tiny", "--config", "-c", help="Captioner config name or JSON file."),
        out: Optional[str] = typer.Option(None, "--out", "-o", help="Run directory (default ROOT/models/captioner-<config>)."),
        max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Stop (and checkpoint) after M minutes."),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Override train.max_steps."),
        caption_source: str = typer.Option("original", "--caption-source", help="Reference captions' source."),
        val_fraction: float = typer.Option(0.1, "--val-fraction", min=0.0, max=0.5, help="Held-out share of clips."),
        clip_model: Optional[str] = typer.Option(None, "--clip-model", help="open_clip vision tower name."),
        clip_pretrained: Optional[str] = typer.Option(None, "--clip-pretrained", help="Local CLIP weights for the tower."),
        lm_pretrained: Optional[str] = typer.Option(None, "--lm-pretrained", help="Local Hugging Face LM directory (base config)."),
        reverse_augment: bool = typer.Option(False, "--reverse-augment", help="Time-reversal augmentation (synthetic data)."),
        fresh: bool = typer.Option(False, "--fresh", help="Ignore an existing checkpoint in --out.")) -> None:
    """Train the video captioner on clips with reference captions (resumes from --out/latest)."""
    from pipelines.captioner_train_job import TrainJobConfig, run_train_job
    try:
        job = TrainJobConfig(root=root, dataset=dataset, where=where, config=config, out=out,
                             max_minutes=max_minutes, max_steps=max_steps,
                             caption_source=caption_source, val_fraction=val_fraction,
                             clip_model=clip_model, clip_pretrained=clip_pretrained,
                             lm_pretrained=lm_pretrained, reverse_augment=reverse_augment, resume=not fresh)
        result = run_train_job(job)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    m = result.metrics
    typer.echo(f"trained {result.step} steps in {result.train_seconds / 60:.1f} min -> {result.checkpoint}")
    typer.echo("  " + ", ".join(f"{k} {v:.4g}" for k, v in m.items() if isinstance(v, float)))


def caption_cmd(
        root: str = typer.Option("corpus", "--root", "-r", envvar="VIDCORPUS_ROOT", help=ROOT_HELP),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Captioner checkpoint or run directory."),
        teacher: Optional[str] = typer.Option(None, "--teacher", help="Local Hugging Face VLM directory instead of --model."),
        where: Optional[str] = typer.Option(None, "--where", help='SQL filter on clips_v, e.g. "NOT rejected".'),
        runner: str = typer.Option("ray", "--runner", help="ray (default) or local."),
        address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address."),
        actors: int = typer.Option(1, "--actors", min=1, help="Captioner actors (model copies)."),
        batch_size: int = typer.Option(16, "--batch-size", min=1, help="Clips per generation batch."),
        clip_model: Optional[str] = typer.Option(None, "--clip-model", help="open_clip model to score captions."),
        clip_pretrained: Optional[str] = typer.Option(None, "--clip-pretrained", help="Its local weights.")) -> None:
    """Densely re-caption clips with a trained captioner (or a teacher VLM); reruns skip done clips."""
    from pipelines.caption_stage import CaptionJobConfig, run_caption_job
    if (model is None) == (teacher is None):
        fail("pass exactly one of --model (a captioner checkpoint) or --teacher (a VLM directory)")
    try:
        job = CaptionJobConfig(root=root, model=model, teacher=teacher, where=where, runner=runner,
                               address=address, actors=actors, batch_size=batch_size,
                               clip_model=clip_model, clip_pretrained=clip_pretrained)
        result = run_caption_job(job)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    typer.echo(result.text())
