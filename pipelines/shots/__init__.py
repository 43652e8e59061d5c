"""Shot detection: decode once, find cuts and gradual transitions, turn them into shots.

    from pipelines.shots import decode_frames, create_detector, shots_from_transitions

    frames = decode_frames("video.mp4")                 # FrameSet (raises DecodeError)
    transitions = create_detector("hybrid").detect(frames)
    shots = shots_from_transitions(frames, transitions, min_len_s=0.5, max_len_s=10.0)

Detectors (``create_detector(name, **config)``): ``hybrid`` (default), ``transnetv2``,
``adaptive`` and ``content`` (PySceneDetect). Config keys are the fields of each detector's config
dataclass; nested configs take dicts, e.g. ``create_detector("hybrid", cuts={"ratio": 2.5})``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from pipelines.shots.decode import DecodeConfig, DecodeError, FrameSet, decode_frames
from pipelines.shots.hybrid import HybridConfig, HybridDetector
from pipelines.shots.scenedetect_det import AdaptiveConfig, ContentConfig, SceneDetectDetector
from pipelines.shots.shots import shots_from_transitions
from pipelines.shots.transnet import TransNetV2Config, TransNetV2Detector
from pipelines.shots.types import Shot, ShotDetector, Transition

DEFAULT_DETECTOR = "hybrid"

_REGISTRY: dict[str, tuple[type, Callable[[Any], ShotDetector]]] = {
    "hybrid": (HybridConfig, HybridDetector),
    "transnetv2": (TransNetV2Config, TransNetV2Detector),
    "adaptive": (AdaptiveConfig, lambda c: SceneDetectDetector("adaptive", c)),
    "content": (ContentConfig, lambda c: SceneDetectDetector("content", c)),
}


def available_detectors() -> list[str]:
    """Names accepted by :func:`create_detector`."""
    return sorted(_REGISTRY)


def create_detector(name: str = DEFAULT_DETECTOR, **config: Any) -> ShotDetector:
    """Build a detector by name; ``config`` overrides fields of its config dataclass."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown shot detector {name!r}; choose one of {available_detectors()}")
    config_cls, factory = _REGISTRY[name]
    return factory(build_config(config_cls, config))


def build_config(config_cls: type, overrides: dict[str, Any]):
    """``config_cls(**overrides)``, building nested dataclass fields from dicts and naming the
    valid keys when one is unknown."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"{config_cls.__name__} has no field(s) {unknown}; valid: {sorted(fields)}")
    values = {}
    for key, value in overrides.items():
        default = fields[key].default_factory() if fields[key].default_factory is not dataclasses.MISSING else None
        if isinstance(value, dict) and dataclasses.is_dataclass(default):
            value = build_config(type(default), value)
        values[key] = value
    return config_cls(**values)


def detect_transitions(
    path: str | Path, detector: str | ShotDetector = DEFAULT_DETECTOR, decode: DecodeConfig = DecodeConfig()
) -> tuple[FrameSet, list[Transition]]:
    """Decode ``path`` once and detect its transitions (raises :class:`DecodeError`)."""
    frames = decode_frames(path, decode)
    det = create_detector(detector) if isinstance(detector, str) else detector
    return frames, det.detect(frames)


__all__ = [
    "AdaptiveConfig",
    "ContentConfig",
    "DecodeConfig",
    "DecodeError",
    "FrameSet",
    "HybridConfig",
    "HybridDetector",
    "SceneDetectDetector",
    "Shot",
    "ShotDetector",
    "TransNetV2Config",
    "TransNetV2Detector",
    "Transition",
    "available_detectors",
    "build_config",
    "create_detector",
    "decode_frames",
    "detect_transitions",
    "shots_from_transitions",
]
