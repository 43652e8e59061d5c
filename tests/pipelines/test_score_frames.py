"""Frame decoding for scoring: one pass, K anchors, pixel statistics that tell bad clips apart."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.score.frames import (
    ClipFrames, FrameConfig, FrameDecodeError, anchor_indices, decode_clip_frames, frame_stats,
    pixel_signature,
)
from pipelines.score.testing import ClipSpec, draw_clip, encode_mp4

CONFIG = FrameConfig(n_frames=4, size=32, stats_size=16)


def _clip(tmp_path, kind: str, **kw) -> str:
    spec = ClipSpec(kind, kind=kind, **kw)
    path = tmp_path / f"{kind}.mp4"
    path.write_bytes(encode_mp4(draw_clip(spec), spec.fps))
    return str(path)


def test_anchor_indices_are_segment_centres():
    assert anchor_indices(8, 4).tolist() == [1, 3, 5, 7]
    assert anchor_indices(2, 4).tolist() == [0, 0, 1, 1]  # short clips repeat frames


def test_decode_shapes_and_round_trip_through_row_columns(tmp_path):
    frames = decode_clip_frames(_clip(tmp_path, "shape"), CONFIG, n_frames=24)
    assert frames.rgb.shape == (4, 32, 32, 3) and frames.rgb.dtype == np.uint8
    assert frames.small.shape == (4, 2, 16, 16, 3)
    back = ClipFrames.from_row(frames.to_row())
    assert np.array_equal(back.rgb, frames.rgb) and np.array_equal(back.small, frames.small)


def test_ffmpeg_threads_change_speed_not_frames(tmp_path):
    from dataclasses import replace
    path = _clip(tmp_path, "shape")
    one = decode_clip_frames(path, CONFIG, n_frames=24)
    for threads in (0, 2):  # 0: FFmpeg's own choice
        other = decode_clip_frames(path, replace(CONFIG, decode_threads=threads), n_frames=24)
        assert np.array_equal(other.rgb, one.rgb) and np.array_equal(other.small, one.small)
    with pytest.raises(ValueError, match="decode_threads"):
        FrameConfig(decode_threads=-1)


def test_wrong_frame_count_hint_still_decodes(tmp_path):
    path = _clip(tmp_path, "shape")
    assert np.array_equal(decode_clip_frames(path, CONFIG, n_frames=500).rgb,
                          decode_clip_frames(path, CONFIG, n_frames=None).rgb)


@pytest.mark.parametrize("kind, expect", [
    ("shape", {"black": 0.0, "frozen": 0.0}),
    ("black", {"black": 1.0, "frozen": 1.0}),
    ("frozen", {"black": 0.0, "frozen": 1.0}),
    ("noise", {"black": 0.0, "frozen": 0.0}),
])
def test_stats_tell_defects_apart(tmp_path, kind, expect):
    stats = frame_stats(decode_clip_frames(_clip(tmp_path, kind), CONFIG))
    assert {k: stats[k] for k in expect} == expect
    assert 0.0 <= stats["motion"] <= 1.0 and 0.0 <= stats["luma"] <= 1.0
    if kind == "noise":
        assert stats["motion"] > 0.1
    elif kind == "shape":
        assert 0.0 < stats["motion"] < 0.05
    else:
        assert stats["motion"] < 0.005


def test_missing_and_garbage_files_raise_decode_error(tmp_path):
    with pytest.raises(FrameDecodeError):
        decode_clip_frames(str(tmp_path / "absent.mp4"), CONFIG)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(FrameDecodeError):
        decode_clip_frames(str(garbage), CONFIG)


def test_pixel_signature_matches_a_shifted_brighter_rerender_not_another_scene(tmp_path):
    """Near-duplicates (same scene, shifted 2 px, 8% brighter) keep their layout; other scenes do not."""
    config = FrameConfig(n_frames=4, size=32, stats_size=64)
    base = draw_clip(ClipSpec("a", color="red", background="blue", size=(96, 64), seed=0))
    rerender = np.clip(np.roll(base, 2, axis=2).astype(np.float32) * 1.08, 0, 255).astype(np.uint8)
    other = draw_clip(ClipSpec("b", color="yellow", background="blue", size=(96, 64), seed=11))  # higher up
    sig = {}
    for name, frames in (("base", base), ("rerender", rerender), ("other", other),
                         ("black", draw_clip(ClipSpec("k", kind="black", size=(96, 64))))):
        path = tmp_path / f"{name}.mp4"
        path.write_bytes(encode_mp4(frames, 12))
        sig[name] = pixel_signature(decode_clip_frames(str(path), config))
    assert sig["base"].shape == (2 * 16 * 16 * 3,) and np.linalg.norm(sig["base"]) == pytest.approx(1.0, abs=1e-5)
    assert sig["base"] @ sig["rerender"] > 0.9 > 0.5 > sig["base"] @ sig["other"]
    assert not sig["black"].any()  # no layout: matches nothing through pixels
