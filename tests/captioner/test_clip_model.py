"""The tiny CLIP config and train_clip: checkpoints open_clip loads by name, fine-tuning resumes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from captioner.clip_model import (
    TINY, VIEW_OBJECTS, VIEWS, TrainClipConfig, create_clip, encode_views, input_size,
    register_configs, train_clip, view_images,
)

COLOURS = np.array([[220, 40, 40], [40, 170, 70], [40, 70, 220], [240, 220, 40]], np.uint8)
TEXTS = ["red", "green", "blue", "yellow"]


def _toy_clips(n_per_colour: int = 4, frames: int = 2) -> tuple[np.ndarray, list[list[str]]]:
    """Clips that are a flat colour with a little noise; captions name the colour."""
    rng = np.random.default_rng(0)
    clips, texts = [], []
    for k, colour in enumerate(COLOURS):
        for _ in range(n_per_colour):
            noise = rng.integers(-20, 20, (frames, 32, 32, 3))
            clips.append(np.clip(colour + noise, 0, 255).astype(np.uint8))
            texts.append([TEXTS[k], f"a {TEXTS[k]} frame"])
    return np.stack(clips), texts


def test_tiny_config_is_registered_for_every_open_clip_entry_point():
    import open_clip
    assert TINY in register_configs() and TINY in open_clip.list_models()
    assert input_size(TINY) == 32
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
        x = torch.from_numpy(frames[::4, 0]).permute(0, 3, 1, 2).float() / 255  # (4, 3, 32, 32)
        image = encode_views(model, x, ("frame",))  # normalised: one view
        text = model.encode_text(tokenizer(TEXTS), normalize=True)
    assert (image @ text.T).argmax(dim=1).tolist() == [0, 1, 2, 3]


def test_bad_configs_say_what_to_change(tmp_path):
    with pytest.raises(ValueError, match="never downloaded"):
        TrainClipConfig(pretrained="laion2b_s34b_b79k")
    with pytest.raises(ValueError, match="batch_size"):
        TrainClipConfig(batch_size=1)
    frames, texts = _toy_clips()
    with pytest.raises(AssertionError, match="32px"):
        train_clip(frames[:, :, :16, :16], texts, TrainClipConfig(steps=1, batch_size=4), str(tmp_path / "x.pt"))
    with pytest.raises(ValueError, match="frame, crops, objects, silhouettes"):
        TrainClipConfig(views=("frame", "edges"))
    assert TrainClipConfig(views=["silhouettes", "frame"]).views == ("frame", "silhouettes")


def _shape_scene(colour, shape: str, side: int = 128) -> np.ndarray:
    """A flat gray frame with one small coloured square or disc at a fixed place, (side, side, 3)."""
    frame = np.full((side, side, 3), 120, np.uint8)
    yy, xx = np.mgrid[:side, :side]
    cy, cx, r = side * 0.3, side * 0.6, side * 0.08
    inside = (abs(yy - cy) <= r) & (abs(xx - cx) <= r) if shape == "square" else (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    frame[inside] = colour
    return frame


def test_views_crop_the_object_from_the_large_frame_and_silhouettes_drop_its_colour():
    frames = np.stack([_shape_scene((220, 40, 40), "square"), _shape_scene((40, 70, 220), "square"),
                       _shape_scene((220, 40, 40), "disc")])
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    images, kinds = view_images(x, VIEWS, size=64)
    assert images.shape == (3, 1 + 3 * VIEW_OBJECTS, 3, 64, 64) and kinds == [0, 1, 1, 2, 2, 3, 3]
    frame, crop, cutout, outline = images[:, 0], images[:, 1], images[:, 3], images[:, 5]
    # the cut-out object keeps its colour and loses the gray background around it
    background = outline[:, 0] < 0.01  # (3, 64, 64)
    assert background.any() and cutout.permute(1, 0, 2, 3)[:, background].abs().max() < 1e-6
    object_pixels = outline[0, 0] > 0.99
    assert torch.allclose(cutout[0][:, object_pixels].mean(1), torch.tensor([220, 40, 40]) / 255, atol=0.02)
    assert torch.allclose(cutout[1][:, object_pixels].mean(1), torch.tensor([40, 70, 220]) / 255, atol=0.02)
    assert crop[0, 0].mean() > frame[0, 0].mean() + 0.05  # red: the crop is much object, the frame gray
    red_square, blue_square, red_disc = outline
    assert torch.allclose(red_square, blue_square, atol=0.05)  # colour gone
    assert (red_square - red_disc).abs().mean() > 0.02  # shape kept
    assert torch.equal(outline[:, 0], outline[:, 1]) and torch.equal(outline[:, 0], outline[:, 2])  # gray
    assert not torch.allclose(crop[0], crop[1], atol=0.05)  # the colour crops do tell red from blue


def test_view_recipe_swap_vocabulary_and_frame_size_travel_with_the_checkpoint(tmp_path):
    from captioner.clip_scorer import ClipScorer, ClipScorerConfig, checkpoint_recipe
    frames = np.stack([np.stack([_shape_scene(c, s)] * 2) for c in COLOURS for s in ("square", "disc")])
    texts = [[f"{t} {s}", f"a {t} {s} on gray"] for t in TEXTS for s in ("square", "disc")]
    out = tmp_path / "clip.pt"
    config = TrainClipConfig(steps=6, batch_size=4, warmup_steps=2, threads=1, views=VIEWS, view_source=128,
                             word_positives=True, view_loss=1.0)
    result = train_clip(frames, texts, config, str(out))
    assert np.isfinite(result.final_loss)
    recipe = checkpoint_recipe(str(out))
    assert recipe.views == VIEWS and recipe.frame_size == 128
    assert set(recipe.rivals["red"]) == {"green", "blue", "yellow"} and recipe.rivals["square"] == ["disc"]
    scorer = ClipScorer(ClipScorerConfig(TINY, str(out), threads=1)).load()
    assert (scorer.views, scorer.frame_size, scorer.image_size) == (VIEWS, 128, 32)
    video = scorer.video_embeddings(frames[:3])
    assert video.shape == (3, 64) and np.allclose(np.linalg.norm(video, axis=1), 1, atol=1e-5)
    same, objects = scorer.video_embeddings(frames[:3], objects=True)  # one pass gives both
    assert np.allclose(same, video, atol=1e-6) and objects.shape == (3, VIEW_OBJECTS, 64)
    assert np.allclose(np.linalg.norm(objects, axis=2), 1, atol=1e-5)
    whole = ClipScorer(ClipScorerConfig(TINY, str(out), threads=1, views=("frame",))).load()
    assert not np.allclose(whole.video_embeddings(frames[:3]), video, atol=1e-3)  # the views matter
    frame_video, one_object = whole.video_embeddings(frames[:3], objects=True)
    assert one_object.shape == (3, 1, 64) and np.allclose(one_object[:, 0], frame_video, atol=1e-5)
    assert checkpoint_recipe(None).views == ("frame",) and checkpoint_recipe(None).rivals is None


def test_word_positives_make_a_short_caption_true_of_every_clip_that_holds_its_key_words():
    from captioner.clip_model import _Batches, create_clip
    _, tokenizer = create_clip(TINY)
    texts = [[f"{c} {s}", f"a large {c} {s} spins"] for c in ("red", "blue", "green") for s in ("star", "circle")]
    texts[0].append("star video")  # clip 0: a red star
    from captioner.caption_contrast import build_rivals
    rivals = build_rivals(sorted({t for clip in texts for t in clip}), clips=texts)
    batches = _Batches(texts, tokenizer, seed=0, rivals=rivals)
    row = {t: int(batches.choices[i][j]) for i, clip in enumerate(texts) for j, t in enumerate(clip)}
    clips = np.arange(len(texts))  # red star, red circle, blue star, blue circle, green star, green circle
    positives = batches.positives(clips, np.array([row["star video"], row["red star"], row["a large blue circle spins"]]))
    assert positives[:, 0].tolist() == [True, False, True, False, True, False]  # every star clip
    assert positives[:, 1].tolist() == [True, False, False, False, False, False]  # only the red star
    assert positives[:, 2].tolist() == [False, False, False, True, False, False]


def test_a_checkpoint_of_another_architecture_is_refused_with_what_to_do(tmp_path):
    model, _ = create_clip(TINY)
    state = model.state_dict()
    state["transformer.resblocks.9.ln_1.weight"] = torch.ones(64)  # a text layer the config lacks
    torch.save({"state_dict": state}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="retrained with train-clip"):
        create_clip(TINY, str(tmp_path / "old.pt"))
