"""Demo recipe: a corpus dataset -> tiny VAE -> precomputed latents -> tiny DiT -> an mp4 for a prompt.

    from generator.recipe import train_demo_generator
    out = train_demo_generator("demo_root", "demo", "a red circle moves left over a blue background")
    out["mp4"], out["dit_loss"]

Stages and what they leave under ROOT (reruns reuse finished work, so a second call takes seconds):

1. VAE (`generator.train_vae`, `vae_minutes`) -> models/vae/demo-vae/, runs/demo-vae/metrics.jsonl;
   finished when runs/demo-vae/done.json names an existing checkpoint.
2. Latents (`generator.precompute.precompute_for_training`) -> shards/<dataset>-latents; reused
   when its manifest says it was made from this dataset with this VAE, text encoder and frames.
3. DiT (`generator.train`, `dit_minutes`) -> models/dit/demo-dit/, runs/demo-dit/metrics.jsonl;
   finished when runs/demo-dit/done.json names an existing checkpoint and the same inputs (VAE
   checkpoint, latents, text encoder). An interrupted run resumes; a run on other inputs restarts.
4. Sample (`generator.sample.sample_to_mp4`) -> runs/demo-dit/samples/<prompt hash>.mp4, kept
   while the DiT is unchanged.

Done markers are written last, with tmp-then-rename. The recipe owns the demo-vae / demo-dit
directories: a stage that must start over removes its own stale run and checkpoints first.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zlib
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from generator.checkpoint import load_checkpoint, resolve_checkpoint
from generator.data import DataConfig
from generator.flow import FlowConfig
from generator.metrics import read_metrics
from generator.precompute import precompute_for_training
from generator.sample import sample_to_mp4
from generator.text import TextConfig
from generator.train import TrainConfig, train_dit
from generator.train_vae import VAETrainConfig, train_vae
from storage.shards import load_manifest

VAE_RUN, DIT_RUN, DONE = "demo-vae", "demo-dit", "done.json"
SAMPLE = dict(frames=9, height=64, width=96)


def train_demo_generator(root: str | Path, dataset: str, prompt: str, *, vae_minutes: float = 2.5,
                         dit_minutes: float = 4.0, clip_checkpoint: str | None = None,
                         progress: bool = True) -> dict[str, Any]:
    """Train (or reuse) the demo VAE and DiT on ROOT/shards/<dataset>, sample `prompt` to mp4.

    Returns paths (vae_checkpoint, dit_checkpoint, run_dir, metrics, mp4, latents_dataset), the
    final losses (vae_recon_l1, dit_loss; None when a run logged no line), steps and seconds,
    and `reused`: which stages were skipped because their work was already done.
    """
    root, t0 = Path(root), time.time()
    if not (root / "shards" / dataset / "manifest.json").is_file():
        raise ValueError(f"{root / 'shards' / dataset} is no finished dataset (no manifest.json); "
                         "write one with `vidcorpus dataset create`")
    vae = _vae_stage(root, dataset, vae_minutes, progress)
    config = demo_dit_config(root, dataset, vae["checkpoint"], clip_checkpoint, dit_minutes, progress)
    latents = _latents_stage(config, vae["checkpoint"])
    dit = _dit_stage(replace(config, dataset=latents["dataset"]), vae["checkpoint"])
    mp4 = _sample_stage(root, prompt, dit)
    return {"vae_checkpoint": Path(vae["checkpoint"]), "dit_checkpoint": Path(dit["checkpoint"]),
            "run_dir": root / "runs" / DIT_RUN, "metrics": root / "runs" / DIT_RUN / "metrics.jsonl",
            "mp4": mp4["path"], "latents_dataset": latents["dataset"],
            "vae_recon_l1": vae["loss"], "dit_loss": dit["loss"], "vae_steps": vae["step"], "dit_steps": dit["step"],
            "reused": {"vae": vae["reused"], "latents": latents["reused"], "dit": dit["reused"], "mp4": mp4["reused"]},
            "seconds": time.time() - t0}


def demo_dit_config(root: Path, dataset: str, vae_checkpoint: str, clip_checkpoint: str | None,
                    minutes: float, progress: bool = True) -> TrainConfig:
    """The demo's DiT settings: tiny DiT on 64x64-pixel, 9-frame clips, 1024-token packs."""
    return TrainConfig(
        root=str(root), dataset=dataset, autoencoder=str(vae_checkpoint),
        text=TextConfig(checkpoint=clip_checkpoint) if clip_checkpoint else TextConfig(),
        data=DataConfig(token_budget=1024, max_frames=9, max_pixels=64 * 64),
        flow=FlowConfig(base_tokens=16, logit_mean=1.0),   # more training at the noisy end, where colour is decided
        steps=None, minutes=minutes, lr=1e-3, warmup_steps=20, ema_decay=0.99, cpu_threads=1,
        run_id=DIT_RUN, resume=True, progress=progress)


# ------------------------------------------------------------------------- stages


def _vae_stage(root: Path, dataset: str, minutes: float, progress: bool) -> dict[str, Any]:
    inputs = {"dataset": dataset}
    done = _finished(root / "runs" / VAE_RUN, inputs)
    if done:
        return {**done, "reused": True}
    _remove_run(root, "vae", VAE_RUN)
    result = train_vae(VAETrainConfig(root=str(root), dataset=dataset, steps=None, minutes=minutes,
                                      cpu_threads=1, run_id=VAE_RUN, progress=progress))
    record = {"checkpoint": str(result.checkpoint), "loss": result.recon_l1, "step": result.step, "inputs": inputs}
    _write_json(root / "runs" / VAE_RUN / DONE, record)
    return {**record, "reused": False}


def _latents_stage(config: TrainConfig, vae_checkpoint: str) -> dict[str, Any]:
    name = f"{config.dataset}-latents"
    out_dir = Path(config.root) / "shards" / name
    if (out_dir / "manifest.json").is_file() and _latents_match(load_manifest(out_dir), config, vae_checkpoint):
        return {"dataset": name, "reused": True}
    return {"dataset": precompute_for_training(config, name), "reused": False}


def _latents_match(manifest: dict[str, Any], config: TrainConfig, vae_checkpoint: str) -> bool:
    """Was this latents dataset made from config.dataset with this VAE, text encoder and frame policy?"""
    extra = manifest.get("extra") or {}
    vae_config = json.loads(json.dumps(load_checkpoint(vae_checkpoint)["model_config"]))   # as the manifest has it
    data = config.data
    return (extra.get("source") == config.dataset and (extra.get("latents") or {}).get("config") == vae_config
            and extra.get("text") == asdict(config.text)
            and (extra.get("max_pixels"), extra.get("min_pixels"), extra.get("max_frames"))
            == (data.max_pixels, data.min_pixels, data.max_frames))


def _dit_stage(config: TrainConfig, vae_checkpoint: str) -> dict[str, Any]:
    root = Path(config.root)
    latents = load_manifest(root / "shards" / config.dataset)
    inputs = {"autoencoder": _identity(vae_checkpoint), "dataset": config.dataset,
              "dataset_created_at": latents.get("created_at"), "text": asdict(config.text)}
    done = _finished(root / "runs" / DIT_RUN, inputs)
    if done:
        return {**done, "reused": True}
    if _recorded_inputs(root / "runs" / DIT_RUN) not in (None, inputs):
        _remove_run(root, "dit", DIT_RUN)                      # trained on other inputs: start over
    _write_json(root / "runs" / DIT_RUN / "inputs.json", inputs)
    result = train_dit(config)
    record = {"checkpoint": str(result.checkpoint), "loss": _last(root / "runs" / DIT_RUN / "metrics.jsonl", "loss"),
              "step": result.step, "inputs": inputs}
    _write_json(root / "runs" / DIT_RUN / DONE, record)
    return {**record, "reused": False}


def _sample_stage(root: Path, prompt: str, dit: dict[str, Any]) -> dict[str, Any]:
    out = root / "runs" / DIT_RUN / "samples" / f"sample-{zlib.crc32(prompt.encode()):08x}.mp4"
    if dit["reused"] and out.is_file():
        return {"path": out, "reused": True}
    tmp = out.with_name(f"{out.stem}.tmp-{os.getpid()}.mp4")
    sample_to_mp4(prompt, tmp, ckpt=dit["checkpoint"], **SAMPLE)
    os.replace(tmp, out)
    return {"path": out, "reused": False}


# ------------------------------------------------------------------------- files


def _finished(run_dir: Path, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """The done record of a run made from `inputs` whose checkpoint still exists, else None."""
    path = run_dir / DONE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    try:
        resolve_checkpoint(record["checkpoint"])
    except FileNotFoundError:
        return None
    return record if record.get("inputs") == inputs else None


def _identity(path: str | Path) -> str:
    """A checkpoint file's path and write time: a retrained VAE at the same step is another input."""
    return f"{path}@{Path(path).stat().st_mtime_ns}"


def _recorded_inputs(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "inputs.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _remove_run(root: Path, kind: str, run_id: str) -> None:
    """Remove the recipe's own run (checkpoints and logs) before it starts over."""
    for path in (root / "models" / kind / run_id, root / "runs" / run_id):
        shutil.rmtree(path, ignore_errors=True)


def _last(metrics: Path, key: str) -> float | None:
    records = [r for r in read_metrics(metrics) if key in r] if metrics.is_file() else []
    return records[-1][key] if records else None


def _write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(tmp, path)
