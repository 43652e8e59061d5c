"""The demo recipe end to end on the toy dataset: VAE -> latents -> DiT -> mp4, then a rerun that
reuses every finished stage."""

import math

import av
import pytest

from generator.checkpoint import load_checkpoint
from generator.metrics import read_metrics
from generator.recipe import train_demo_generator

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "a small white square moves right over a red background"


def test_recipe_trains_samples_and_reuses_finished_work(root):
    first = train_demo_generator(root, "toy", PROMPT, vae_minutes=0.1, dit_minutes=0.1, progress=False)
    assert first["reused"] == {"vae": False, "latents": False, "dit": False, "mp4": False}
    assert first["vae_checkpoint"].is_file() and first["dit_checkpoint"].is_file()
    assert first["vae_steps"] > 0 and first["dit_steps"] >= 10 and math.isfinite(first["vae_recon_l1"])
    assert math.isfinite(first["dit_loss"])
    assert first["run_dir"] == root / "runs" / "demo-dit" and first["metrics"].parent == first["run_dir"]
    assert read_metrics(first["metrics"])[-1]["loss"] == first["dit_loss"]
    ckpt = load_checkpoint(first["dit_checkpoint"])
    assert ckpt["config"]["dataset"] == first["latents_dataset"] == "toy-latents"
    assert ckpt["autoencoder"]["kind"] == "vae" and ckpt["config"]["data"]["token_budget"] == 1024
    with av.open(str(first["mp4"])) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.codec_context.name == "h264"
    assert len(frames) == 9 and frames[0].shape == (64, 96, 3)

    mp4_written = first["mp4"].stat().st_mtime_ns
    second = train_demo_generator(root, "toy", PROMPT, vae_minutes=0.1, dit_minutes=0.1, progress=False)
    assert second["reused"] == {"vae": True, "latents": True, "dit": True, "mp4": True}
    for key in ("vae_checkpoint", "dit_checkpoint", "mp4", "vae_recon_l1", "dit_loss", "dit_steps"):
        assert second[key] == first[key], key
    assert second["mp4"].stat().st_mtime_ns == mp4_written


def test_recipe_refuses_a_dataset_that_is_not_finished(root):
    with pytest.raises(ValueError, match="dataset create"):
        train_demo_generator(root, "missing", PROMPT, vae_minutes=0.01, dit_minutes=0.01, progress=False)
