"""The tiny CLIP config and train_clip: checkpoints open_clip loads by name, fine-tuning resumes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from captioner.clip_model import (
    TINY, TrainClipConfig, create_clip, input_size, register_configs, to_model_input, train_clip,
)

COLOURS = np.array([[220, 40, 40], [40, 170, 70], [40, 70, 220], [240, 220, 40]], np.uint8)
TEXTS = ["red", "green", "blue", "yellow"]


def _toy_clips(n_per_colour: int = 4, frames: int = 2) -> tuple[np.ndarray, list[list[str]]]:
    """Clips that are a flat colour with a little noise; captions name the colour."""
    rng = np.random.default_rng(0)
    clips, texts = [], []
    for k, colour in enumerate(COLOURS):
        for _ in range(n_per_colour):
            noise = rng.integers(-20, 20, (frames, 64, 64, 3))
            clips.append(np.clip(colour + noise, 0, 255).astype(np.uint8))
            texts.append([TEXTS[k], f"a {TEXTS[k]} frame"])
    return np.stack(clips), texts


def test_tiny_config_is_registered_for_every_open_clip_entry_point():
    import open_clip
    assert TINY in register_configs() and TINY in open_clip.list_models()
    assert input_size(TINY) == 64
    with pytest.raises(ValueError, match="unknown CLIP model"):
        input_size("no-such-model")


def test_checkpoint_loads_with_create_model_and_transforms_and_fine_tunes(tmp_path):
    import open_clip
    frames, texts = _toy_clips()
    out = tmp_path / "clip.pt"
    config = TrainClipConfig(steps=30, batch_size=8, lr=3e-3, warmup_steps=3, log_every=10, threads=1)
    result = train_clip(frames, texts, config, str(out))
    assert result.steps == 30 and [m["step"] for m in result.metrics] == [10, 20, 30]
    assert result.metrics[-1]["loss"] < result.metrics[0]["loss"]

    model, _, preprocess = open_clip.create_model_and_transforms(TINY, pretrained=str(out))
    trained = torch.load(out, weights_only=True)["state_dict"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.items())
    assert callable(preprocess)

    tuned = train_clip(frames, texts, TrainClipConfig(pretrained=str(out), steps=2, batch_size=8, lr=1e-5,
                                                      threads=1), str(tmp_path / "tuned.pt"))
    assert np.isfinite(tuned.final_loss) and tuned.final_loss < result.metrics[0]["loss"]


def test_training_separates_the_captions_it_saw(tmp_path):
    frames, texts = _toy_clips()
    out = tmp_path / "clip.pt"
    train_clip(frames, texts, TrainClipConfig(steps=60, batch_size=8, lr=3e-3, warmup_steps=5,
                                              threads=1), str(out))
    model, tokenizer = create_clip(TINY, str(out))
    with torch.no_grad():
        image = model.encode_image(to_model_input(frames[::4, 0], model.visual.image_mean,
                                                  model.visual.image_std), normalize=True)
        text = model.encode_text(tokenizer(TEXTS), normalize=True)
    assert (image @ text.T).argmax(dim=1).tolist() == [0, 1, 2, 3]


def test_bad_configs_say_what_to_change(tmp_path):
    with pytest.raises(ValueError, match="never downloaded"):
        TrainClipConfig(pretrained="laion2b_s34b_b79k")
    with pytest.raises(ValueError, match="batch_size"):
        TrainClipConfig(batch_size=1)
    frames, texts = _toy_clips()
    with pytest.raises(AssertionError, match="64px"):
        train_clip(frames[:, :, :32, :32], texts, TrainClipConfig(steps=1, batch_size=4), str(tmp_path / "x.pt"))
