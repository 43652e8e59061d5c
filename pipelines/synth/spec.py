"""Vocabulary of the synthetic world and the frozen specs that describe what to render.

Pure data, no I/O. ``world.py`` samples these specs; ``render.py`` draws them.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

SHAPES = ("circle", "square", "triangle", "star", "hexagon")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 220, 40),
    "green": (40, 170, 70),
    "cyan": (40, 200, 220),
    "blue": (40, 70, 220),
    "purple": (140, 60, 190),
    "pink": (245, 130, 190),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "brown": (130, 80, 40),
}
SIZES = ("small", "medium", "large")
SIZE_FRACTION = {"small": 0.12, "medium": 0.2, "large": 0.3}  # diameter / sqrt(frame area)
MOTIONS = ("left", "right", "up", "down", "growing", "shrinking", "spinning", "still")
BACKGROUNDS = ("blue", "green", "white", "gray", "yellow", "purple", "brown")
CAMERAS = ("static", "pan left", "pan right")
TRANSITIONS = ("cut", "fade", "dissolve")
DEFECTS = ("black", "frozen", "noise", "duplicate")
BROKEN_KINDS = ("truncated", "garbage", "zero_bytes")
ASPECTS = ("landscape", "portrait", "square", "ultrawide", "odd")
FPS_CHOICES = (Fraction(24), Fraction(25), Fraction(30), Fraction(30000, 1001), Fraction(15))
FPS_PROBS = (0.3, 0.2, 0.2, 0.2, 0.1)

MIN_COLOR_CONTRAST = 110.0  # RGB distance between an object and its background
TRANSITION_PROBS = (0.7, 0.15, 0.15)  # cut, fade, dissolve
GRADUAL_FRAMES = (8, 20)  # inclusive range of fade / dissolve lengths
TWO_OBJECT_PROB = 0.35
ALT_WRONG_PROB = 0.2


@dataclass(frozen=True)
class VideoFormat:
    """Container, codec and pixel format of one file, as ``truth.json`` names them."""

    container: str
    codec: str
    pix_fmt: str


FORMATS = {
    "mp4_h264": VideoFormat("mp4", "h264", "yuv420p"),
    "mkv_hevc": VideoFormat("mkv", "hevc", "yuv420p"),
    "webm_vp9": VideoFormat("webm", "vp9", "yuv420p"),
    "avi_mpeg4": VideoFormat("avi", "mpeg4", "yuv420p"),
    "mkv_h264_444": VideoFormat("mkv", "h264", "yuv444p"),  # accepts odd frame sizes
}
HEVC_MIN_WIDTH = 64  # libx265 (ultrafast) corrupts the heap on narrower frames; use H.264 there
# Dealt in rotation over shuffled videos (odd sizes always get mkv_h264_444, broken files mp4).
FORMAT_QUOTA = ("mp4_h264", "mkv_hevc", "mp4_h264", "webm_vp9", "mp4_h264", "avi_mpeg4",
                "mp4_h264", "mp4_h264")
DEFECT_QUOTA = ("black", "frozen", None, "noise", "duplicate", None, None)  # one bad shot or none
ASPECT_QUOTA = ("landscape", "portrait", "square", "landscape", "ultrawide", "odd", "portrait",
                "landscape", "square", "ultrawide")


@dataclass(frozen=True)
class ObjectSpec:
    """One moving shape. Positions are pixels at the shot's local frame 0; rates are per frame."""

    shape: str
    color: str
    size: str
    motion: str
    x: float
    y: float
    vx: float = 0.0
    vy: float = 0.0
    diameter: float = 10.0  # nominal, before growing / shrinking
    scale0: float = 1.0
    dscale: float = 0.0
    angle0: float = 0.0  # degrees
    spin: float = 0.0  # degrees per frame

    def attributes(self) -> dict:
        """The object's ground-truth attributes."""
        return {"shape": self.shape, "color": self.color, "size": self.size, "motion": self.motion}


@dataclass(frozen=True)
class ShotSpec:
    """One shot: clean frames ``[start_frame, end_frame)`` plus everything needed to draw it."""

    index: int
    start_frame: int
    end_frame: int
    objects: tuple[ObjectSpec, ...]
    background: str  # a BACKGROUNDS name, or "black" / "noise" for blank bad shots
    camera: str
    caption: str
    alt_text: str
    alt_text_wrong: bool = False
    pan_speed: float = 0.0  # camera x offset per frame, px (positive: pan right)
    texture: tuple[float, float, float, float] = (100.0, 0.0, 100.0, 0.0)  # λx, φx, λy, φy
    defects: tuple[str, ...] = ()
    dup_group: int | None = None
    shift: tuple[float, float] = (0.0, 0.0)  # whole-content shift of a near-duplicate, px
    brightness: float = 1.0
    noise_seed: int = 0


@dataclass(frozen=True)
class TransitionSpec:
    """Boundary between two shots; frames ``[start_frame, end_frame)`` are transitional.

    A cut has ``start_frame == end_frame`` == the first frame of the new shot.
    """

    kind: str
    start_frame: int
    end_frame: int


@dataclass(frozen=True)
class VideoSpec:
    """Everything needed to render one file and write its truth entry."""

    index: int
    file: str
    fmt: VideoFormat
    width: int
    height: int
    fps: Fraction
    n_frames: int
    broken: str | None
    transitions: tuple[TransitionSpec, ...]
    shots: tuple[ShotSpec, ...]
    byte_seed: int  # seeds the bytes of a "garbage" file
