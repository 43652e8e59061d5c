"""PySceneDetect's ContentDetector and AdaptiveDetector, run on our decoded frames.

The library detectors are fed through their ``process_frame`` API with the 48x27 BGR frames of the
:class:`FrameSet` (no second decode) and integer frame numbers, which map back to our
presentation timestamps. Both only report cuts; a gradual transition shows up, if at all, as one or
several cuts inside it.

``detect_path`` runs the library end to end on a file (its own OpenCV decode, its own downscale):
the anchor the benchmark compares against.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipelines.shots.decode import FrameSet
from pipelines.shots.types import Transition


@dataclass(frozen=True)
class ContentConfig:
    """``scenedetect.ContentDetector`` arguments (library defaults)."""

    threshold: float = 27.0
    min_scene_len: int = 15  # frames
    luma_only: bool = False


@dataclass(frozen=True)
class AdaptiveConfig:
    """``scenedetect.AdaptiveDetector`` arguments (library defaults)."""

    adaptive_threshold: float = 3.0
    min_scene_len: int = 15  # frames
    window_width: int = 2
    min_content_val: float = 15.0
    luma_only: bool = False


class SceneDetectDetector:
    """Cuts from a PySceneDetect detector fed with our frames."""

    def __init__(self, name: str, config: ContentConfig | AdaptiveConfig):
        self.name = name
        self.config = config

    def _library_detector(self):
        from scenedetect import AdaptiveDetector, ContentDetector

        if isinstance(self.config, AdaptiveConfig):
            return AdaptiveDetector(**asdict(self.config))
        return ContentDetector(**asdict(self.config))

    def detect(self, frames: FrameSet) -> list[Transition]:
        from scenedetect import FrameTimecode

        detector = self._library_detector()
        fps = frames.avg_fps
        found: list[FrameTimecode] = []
        for index, image in enumerate(bgr_thumbnails(frames)):
            found += detector.process_frame(FrameTimecode(index, fps=fps), image)
        found += detector.post_process(FrameTimecode(len(frames) - 1, fps=fps))
        cuts = sorted({tc.frame_num for tc in found if 0 < tc.frame_num < len(frames)})
        return [Transition("cut", frames.time_of(t), frames.time_of(t), t, t) for t in cuts]


def bgr_thumbnails(frames: FrameSet) -> np.ndarray:
    """``(n, 27, 48, 3)`` uint8 BGR frames, the image format PySceneDetect detectors take."""
    return np.ascontiguousarray(frames.rgb[..., ::-1])


def detect_path(path: str | Path, name: str) -> list[float]:
    """Cut times (seconds) of ``scenedetect.detect(path, <Name>Detector())`` with library defaults:
    the start of every scene after the first."""
    import scenedetect

    detector = {"adaptive": scenedetect.AdaptiveDetector, "content": scenedetect.ContentDetector}[name]()
    scenes = scenedetect.detect(str(path), detector)
    return [start.seconds for start, _ in scenes[1:]]
