"""Shared fixtures: a small synthetic world cut into clips, and a micro captioner config."""
from __future__ import annotations

from pathlib import Path

import pytest

from captioner.captioner_data import CaptionItem, shots_from_truth
from captioner.registry import load_config

# Smaller than `tiny`, so tests that only need *a* trained checkpoint stay fast.
MICRO = {
    "vision": {"open_clip_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1,
                                 "head_width": 16}, "embed_dim": 32, "frames": 4},
    "resampler": {"queries": 4, "layers": 1, "heads": 2, "width": 32},
    "lm": {"config": {"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2,
                      "n_positions": 64}},
    "tokenizer": {"vocab_size": 300, "max_len": 40},
    "train": {"batch_size": 4, "lr": 3e-3, "warmup_steps": 2, "max_steps": 6, "eval_every": 100,
              "checkpoint_every": 100, "eval_items": 4, "num_threads": 2},
    "generate": {"max_new_tokens": 24},
}


def micro_config(**train):
    return load_config("tiny", **{**MICRO, "train": {**MICRO["train"], **train}})


@pytest.fixture(scope="session")
def synth_items(tmp_path_factory) -> list[CaptionItem]:
    """Clean shots of a 6-video world, each cut into its own mp4 (16 clips)."""
    from pipelines.synth import render_world

    out = tmp_path_factory.mktemp("captioner_world")
    render_world(out, n_videos=6, seed=1, duration_s=6.0, max_side=96, progress=False)
    items = shots_from_truth(out, out / "clips")
    assert len(items) >= 6, "the test world should have at least 6 clean shots"
    return items


@pytest.fixture(scope="session")
def micro_run(synth_items, tmp_path_factory) -> Path:
    """A micro captioner trained for a few steps (a checkpoint to load, caption with, compare)."""
    from captioner.captioner_train import train_captioner

    out = tmp_path_factory.mktemp("captioner_runs") / "micro"
    train_captioner(synth_items[2:], synth_items[:2], micro_config(), out, progress=False)
    return out
