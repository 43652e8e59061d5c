"""The synthetic world: rendered files decode as truth.json says, transitions sit where truth
says, bad shots look bad, rendering is deterministic, and the default world has variety."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from pipelines.synth import render_world
from pipelines.synth.spec import HEVC_MIN_WIDTH
from pipelines.synth.world import (
    BROKEN_KINDS, DEFECTS, SHAPES, frame_size, sample_world, world_truth,
)

SMALL_WORLD = {"n_videos": 10, "seed": 1, "duration_s": 6.0, "max_side": 160}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth")
    truth = render_world(out, progress=False, **SMALL_WORLD)
    return out, truth


@pytest.fixture(scope="module")
def decoded(world) -> dict[str, np.ndarray]:
    """Every usable video's frames, (n_frames, H, W, 3) float32."""
    out, truth = world
    frames = {}
    for video in usable(truth):
        with av.open(str(out / video["file"])) as container:
            frames[video["file"]] = np.stack(
                [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            ).astype(np.float32)
    return frames


def usable(truth: dict) -> list[dict]:
    return [v for v in truth["videos"] if v["broken"] is None]


def mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two frames."""
    return float(np.abs(a - b).mean())


def step_diffs(frames: np.ndarray) -> np.ndarray:
    """d[k] = mad(frames[k - 1], frames[k]); d[0] = 0."""
    return np.concatenate([[0.0], np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))])


def boundaries(video: dict) -> list[tuple[dict, dict, dict]]:
    """(shot before, transition, shot after) for every boundary."""
    shots = video["shots"]
    return list(zip(shots, video["transitions"], shots[1:]))


def span(t: dict) -> tuple[int, int]:
    """Transitional frames [start, end); empty for a cut."""
    return (t["frame"], t["frame"]) if t["kind"] == "cut" else (t["start_frame"], t["end_frame"])


# ---------------------------------------------------------------------------- files


def test_truth_file_is_what_render_world_returns(world):
    out, truth = world
    assert json.loads((out / "truth.json").read_text()) == truth
    assert truth["version"] == 1 and truth["seed"] == 1 and len(truth["videos"]) == 10


def test_shots_and_transitions_tile_every_video(world):
    _, truth = world
    for video in usable(truth):
        shots, fps = video["shots"], video["fps"]
        assert shots[0]["start_frame"] == 0 and shots[-1]["end_frame"] == video["n_frames"]
        assert len(video["transitions"]) == len(shots) - 1
        for before, t, after in boundaries(video):
            assert span(t) == (before["end_frame"], after["start_frame"])
            if t["kind"] != "cut":
                assert 8 <= t["end_frame"] - t["start_frame"] <= 20
        for shot in shots:
            assert shot["end_frame"] > shot["start_frame"]
            assert shot["start_s"] == pytest.approx(shot["start_frame"] / fps, abs=1e-4)
            assert shot["end_s"] == pytest.approx(shot["end_frame"] / fps, abs=1e-4)
            assert set(shot["defects"]) <= set(DEFECTS)


def test_usable_videos_decode_with_the_promised_geometry_and_timing(world, decoded):
    out, truth = world
    for video in usable(truth):
        with av.open(str(out / video["file"])) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == video["codec"]
            times = [float(f.time) for f in container.decode(stream)]
        frames = decoded[video["file"]]
        assert frames.shape[:3] == (video["n_frames"], video["height"], video["width"])
        expected = np.arange(video["n_frames"]) / video["fps"]
        np.testing.assert_allclose(times, expected, atol=1.5e-3)  # matroska stores ms


def test_broken_files_do_not_decode(world):
    out, truth = world
    broken = [v for v in truth["videos"] if v["broken"] is not None]
    assert broken, "a world of 8+ videos has a broken file"
    for video in broken:
        assert video["broken"] in BROKEN_KINDS and video["shots"] == []
        with pytest.raises(av.error.FFmpegError):
            with av.open(str(out / video["file"])) as container:
                list(container.decode(video=0))


# ---------------------------------------------------------------------- transitions


def test_cuts_are_sharp_spikes_at_the_frame_truth_gives(world, decoded):
    _, truth = world
    checked = 0
    for video in usable(truth):
        d = step_diffs(decoded[video["file"]])
        for before, t, after in boundaries(video):
            if t["kind"] != "cut" or {"noise"} & set(before["defects"] + after["defects"]):
                continue  # noise shots differ everywhere; their boundaries get their own test
            k = t["frame"]
            inside = [d[s["start_frame"] + 1:s["end_frame"]] for s in (before, after)]
            assert int(np.argmax(d[k - 1:k + 2])) == 1, (video["file"], k, d[k - 2:k + 3])
            assert d[k] > max(4 * max(x.max(initial=0) for x in inside), 10), (video["file"], k)
            checked += 1
    assert checked >= 5


def test_fades_and_dissolves_are_gradual_over_the_span_truth_gives(world, decoded):
    _, truth = world
    checked = {"fade": 0, "dissolve": 0}
    for video in usable(truth):
        frames = decoded[video["file"]]
        d = step_diffs(frames)
        for _, t, _ in boundaries(video):
            if t["kind"] == "cut":
                continue
            start, end = span(t)
            a, b, mid = frames[start - 1], frames[end], frames[(start + end) // 2]
            jump = mad(a, b)  # what a cut between the two shots would look like
            steps = d[start:end + 1]  # (last clean a -> first span frame) ... (-> first clean b)
            assert steps.max() < jump, (video["file"], t, steps, jump)
            if t["kind"] == "dissolve":
                assert min(mad(mid, a), mad(mid, b)) > 0.25 * jump
                assert steps.max() < 0.5 * jump
            else:  # through black: the middle is dark, each step a small share of the brightness
                assert mid.mean() < 0.5 * min(a.mean(), b.mean())
                assert steps.max() < 0.5 * max(a.mean(), b.mean())
            assert mad(b, frames[end + 1]) < 0.25 * mad(b, a)  # end_frame is already shot b
            assert mad(a, frames[start - 2]) < 0.25 * mad(a, b)  # start_frame - 1 is still shot a
            checked[t["kind"]] += 1
    assert checked["fade"] >= 1 and checked["dissolve"] >= 1


# -------------------------------------------------------------------------- defects


def shot_frames(frames: np.ndarray, shot: dict) -> np.ndarray:
    return frames[shot["start_frame"]:shot["end_frame"]]


def test_bad_shots_look_bad(world, decoded):
    _, truth = world
    seen = set()
    for video in usable(truth):
        frames = decoded[video["file"]]
        for shot in video["shots"]:
            clip = shot_frames(frames, shot)
            motion = step_diffs(clip)[1:]
            kind = shot["defects"][0] if shot["defects"] else "clean"
            seen.add(kind)
            if kind == "black":
                assert clip.max() < 24 and clip.mean() < 3
            elif kind == "noise":
                assert motion.min() > 40
            elif kind == "frozen":  # one frame repeated: only the encoder's refinement moves
                assert motion.max() < 1.0
    assert seen == {"clean", *DEFECTS}


def test_near_duplicates_resemble_their_source(world, decoded):
    _, truth = world
    pairs = 0
    for video in usable(truth):
        frames = decoded[video["file"]]
        first = {s["index"]: frames[s["start_frame"]] for s in video["shots"]}
        for copy in (s for s in video["shots"] if "duplicate" in s["defects"]):
            group = [s for s in video["shots"] if s["dup_group"] == copy["dup_group"]]
            source = next(s for s in group if not s["defects"])
            others = [mad(first[copy["index"]], f) for i, f in first.items()
                      if i not in (copy["index"], source["index"])]
            assert source["caption"] == copy["caption"]
            assert mad(first[copy["index"]], first[source["index"]]) < 0.5 * min(others)
            pairs += 1
    assert pairs >= 1


# ---------------------------------------------------------------------- determinism


# Seed 11 holds every codec, and its broken file is a truncated mp4.
TINY_WORLD = {"n_videos": 10, "seed": 11, "duration_s": 3.0, "max_side": 128}


@pytest.fixture(scope="module")
def tiny_worlds(tmp_path_factory) -> tuple[Path, Path, dict]:
    """The same tiny world rendered twice."""
    first, second = tmp_path_factory.mktemp("tiny_a"), tmp_path_factory.mktemp("tiny_b")
    truth = render_world(first, progress=False, **TINY_WORLD)
    assert render_world(second, progress=False, **TINY_WORLD) == truth
    return first, second, truth


def test_same_seed_gives_identical_bytes_for_every_codec(tiny_worlds):
    first, second, truth = tiny_worlds
    assert {v["codec"] for v in usable(truth)} == {"h264", "hevc", "vp9", "mpeg4"}
    for video in truth["videos"]:
        name = video["file"]
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / "truth.json").read_bytes() == (second / "truth.json").read_bytes()


def test_another_seed_gives_another_world(tiny_worlds):
    _, _, truth = tiny_worlds
    assert world_truth(11, sample_world(11, 10, 3.0, 128)) == truth  # sampling alone reproduces it
    assert world_truth(12, sample_world(12, 10, 3.0, 128)) != truth


def test_a_truncated_file_keeps_its_head_but_does_not_decode(tiny_worlds):
    first, _, truth = tiny_worlds
    (video,) = [v for v in truth["videos"] if v["broken"] == "truncated"]
    head = (first / video["file"]).read_bytes()
    assert len(head) > 100 and head[4:8] == b"ftyp"
    with pytest.raises(av.error.FFmpegError):
        with av.open(str(first / video["file"])) as container:
            list(container.decode(video=0))


# -------------------------------------------------------------------------- variety


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_world_has_the_variety_the_pipelines_are_measured_on(seed):
    truth = world_truth(seed, sample_world(seed, 24, 10.0, 320))
    videos = truth["videos"]
    shots = [s for v in videos for s in v["shots"]]
    kinds = {t["kind"] for v in videos for t in v["transitions"]}
    assert kinds == {"cut", "fade", "dissolve"}
    assert {d for s in shots for d in s["defects"]} == set(DEFECTS)
    assert 0.08 <= np.mean([bool(s["defects"]) for s in shots]) <= 0.18
    assert 0.10 <= np.mean([s["alt_text_wrong"] for s in shots]) <= 0.35
    assert len({aspect_class(v["width"], v["height"]) for v in videos}) >= 3
    assert len({v["fps"] for v in videos}) >= 2
    assert len({v["container"] for v in videos}) >= 2
    assert {v["codec"] for v in videos} == {"h264", "hevc", "vp9", "mpeg4"}
    assert any(v["broken"] for v in videos)
    assert all(3 <= len(v["shots"]) <= 6 for v in videos if not v["broken"])
    assert all(max(v["width"], v["height"]) <= 320 for v in videos)


def aspect_class(width: int, height: int) -> str:
    ratio = width / height
    return "portrait" if ratio < 0.8 else "square" if ratio < 1.25 else \
        "landscape" if ratio < 2.0 else "ultrawide"


def test_odd_sizes_are_odd_and_fit_max_side():
    for max_side in (64, 127, 320):
        width, height = frame_size("odd", max_side)
        assert width % 2 == 1 and height % 2 == 1 and max(width, height) <= max_side


def test_captions_name_every_object_and_wrong_alt_texts_are_flagged():
    truth = world_truth(0, sample_world(0, 24, 10.0, 320))
    for shot in (s for v in truth["videos"] for s in v["shots"]):
        attrs = shot["attributes"]
        if not attrs["objects"]:
            assert shot["defects"][0] in ("black", "noise")
            continue
        for obj in attrs["objects"]:
            assert f"{obj['size']} {obj['color']} {obj['shape']}" in shot["caption"]
        assert f"over a {attrs['background']} background" in shot["caption"]
        assert attrs["camera"].replace("pan ", "pans ") in shot["caption"]
        assert 0 < len(shot["alt_text"]) <= 40
        if shot["alt_text_wrong"]:  # wrong ones always name a colour and a shape word
            assert not any(obj["shape"] in shot["alt_text"].lower() and obj["color"]
                           in shot["alt_text"].lower() for obj in attrs["objects"])
    assert set(SHAPES) <= {o["shape"] for v in truth["videos"] for s in v["shots"]
                           for o in s["attributes"]["objects"]}


def test_hevc_is_never_used_on_frames_too_narrow_for_libx265():
    for max_side in (64, 96):
        for video in sample_world(0, 24, 1.0, max_side):
            assert video.fmt.codec != "hevc" or video.width >= HEVC_MIN_WIDTH
