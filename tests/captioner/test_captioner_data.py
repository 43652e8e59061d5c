"""Captioner data and tower input: flips swap direction words with the pixels; colour-free input."""
from __future__ import annotations

import math

import torch

from captioner.captioner_data import CaptionTrainSet
from captioner.captioner_model import camera_shift_curves, motion_channels, split_clips
from captioner.tokenizer import train_bpe

CAPTION = "A small red star moves left over a blue background; the camera pans right."


def _moving_dot_clip(k: int = 4, size: int = 16) -> torch.Tensor:
    """(2K, 3, H, W) uint8: a white dot walking right, top half, over a gray frame."""
    clip = torch.full((2 * k, 3, size, size), 100, dtype=torch.uint8)
    for t in range(2 * k):
        clip[t, :, 2:4, t:t + 2] = 250
    return clip


def test_flips_mirror_the_pixels_and_swap_the_direction_words():
    variants = [CAPTION.replace("left", w).replace("right", w) for w in ("left", "right", "up")]
    tok = train_bpe(variants * 4, 300)
    clip = _moving_dot_clip()
    data = CaptionTrainSet(clip[None], [CAPTION], tok, max_len=48, seed=0,
                           hflip_swaps={"left": "right", "right": "left"},
                           vflip_swaps={"up": "down", "down": "up"})
    seen = set()
    for epoch in range(16):
        batch = data.batch(epoch, 0, 1)
        frames, ids = batch["frames"][0], batch["input_ids"][0]
        text = tok.decode([i for i in ids.tolist() if i not in (tok.bos_id, tok.eos_id, tok.pad_id)])
        bright = frames[0, 0] > 200  # (H, W) where the dot is in the first frame
        in_top, on_left = bool(bright[:8].any()), bool(bright[:, :8].any())
        mirrored = "moves right" in text
        assert mirrored == (not on_left), (text, bright.nonzero())
        assert ("pans left" in text) == mirrored
        seen.add((mirrored, in_top))
    assert len(seen) == 4  # both flips happen, independently


def test_clips_of_two_objects_are_never_mirrored():
    """A mirror would put the caption's second object first (crops come left / top first):
    ``split_clips`` finds the clips whose frames cut into two objects, and the train set does
    not flip those; a one-object clip still is."""
    one = _moving_dot_clip(size=32)
    two = one.clone()
    two[:, :, 20:26, 24:30] = 30  # a dark square apart from the dot, in every frame
    assert split_clips(torch.stack([one, two])).tolist() == [False, True]
    tok = train_bpe([CAPTION, CAPTION.replace("left", "right")] * 4, 300)
    data = CaptionTrainSet(torch.stack([one, two]), [CAPTION] * 2, tok, max_len=48, seed=0,
                           hflip_swaps={"left": "right", "right": "left"},
                           no_flip=split_clips(torch.stack([one, two])))
    flipped = {0: set(), 1: set()}
    for epoch in range(12):
        batch, order = data.batch(epoch, 0, 2), data.order(epoch)
        for row, idx in enumerate(order):
            bright = batch["frames"][row, 0, 0] > 200  # (H, W): the dot in the first frame
            flipped[int(idx)].add(not bool(bright[:, :16].any()))
    assert flipped == {0: {False, True}, 1: {False}}


def test_motion_channels_ignore_colour_and_texture_and_show_change():
    k, size = 3, 16
    base = torch.full((k, 3, size, size), 0.5)
    base += 0.02 * torch.sin(torch.arange(size) / 2.0)  # faint background stripes
    red, blue = base.clone(), base.clone()
    for t in range(k):
        red[t, :, 4:8, 2 + 2 * t:6 + 2 * t] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
        blue[t, :, 4:8, 2 + 2 * t:6 + 2 * t] = torch.tensor([0.1, 0.1, 0.9])[:, None, None]
    out = {}
    for name, px in (("red", red), ("blue", blue)):
        median = px.flatten(2).median(dim=2).values  # (K, 3)
        out[name] = motion_channels(px - median[..., None, None], k)  # (K, 2, H, W)
    assert out["red"].shape == (k, 2, size, size)
    assert torch.equal(out["red"], out["blue"])  # colour-free
    silhouette = out["red"][0, 0] > 0  # (H, W)
    assert silhouette[4:8, 2:6].all() and silhouette.sum() == 16  # the dot, not the stripes
    change = out["red"][0, 1]  # (H, W): the dot moved right by 2 px
    assert change[5, 6:8].min() > 0 and change[5, 2:4].max() < 0
    assert torch.equal(out["red"][-1, 1], out["red"][-2, 1])


def test_camera_shift_curves_peak_at_the_background_shift():
    k, size, step = 4, 32, 2
    stripes = 0.03 * torch.sin(torch.arange(size + k * step) * (2 * math.pi / 12))
    frames = torch.stack([0.5 + stripes[t * step:t * step + size].expand(3, size, size)
                          for t in range(k)])  # (K, 3, H, W): the texture slides left
    curves = camera_shift_curves(frames - 0.5, k, max_shift=4)  # (1, K, 18)
    assert curves.shape == (1, k, 18)
    assert (curves[0, :, :9].argmax(-1) - 4).tolist() == [-step] * k
    still = camera_shift_curves(frames[:1].expand(k, -1, -1, -1) - 0.5, k, max_shift=4)
    assert (still[0, :, :9].argmax(-1) - 4).tolist() == [0] * k
