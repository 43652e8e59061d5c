"""Value types shared by the shot detectors: transitions and shots."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Protocol

from pipelines.shots.decode import FrameSet

TransitionKind = Literal["cut", "gradual"]


@dataclass(frozen=True)
class Transition:
    """A boundary between two shots, in presentation time.

    Cut: ``start_s == end_s`` == timestamp of the first frame of the new shot, and
    ``start_frame == end_frame`` == its index. Gradual: frames ``[start_frame, end_frame)`` are
    transitional (faded or mixed); ``end_frame`` is the first clean frame of the new shot and
    ``end_s`` its timestamp.
    """

    kind: TransitionKind
    start_s: float
    end_s: float
    start_frame: int
    end_frame: int
    score: float = 1.0

    @property
    def mid_s(self) -> float:
        return 0.5 * (self.start_s + self.end_s)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Shot:
    """A clip candidate: clean frames ``[start_frame, end_frame)`` spanning ``[start_s, end_s)``.

    ``transition_in`` says how the shot was entered: ``start`` (beginning of the video),
    ``cut``, ``gradual``, or ``split`` (a long shot cut into windows of at most ``max_len_s``).
    """

    start_s: float
    end_s: float
    start_frame: int
    end_frame: int
    transition_in: Literal["start", "cut", "gradual", "split"]

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def n_frames(self) -> int:
        return self.end_frame - self.start_frame

    def to_dict(self) -> dict:
        return {**asdict(self), "duration_s": self.duration_s}


class ShotDetector(Protocol):
    """What every detector provides: a typed ``config`` and ``detect``."""

    name: str

    def detect(self, frames: FrameSet) -> list[Transition]:
        """Transitions of one decoded video, sorted by time."""
        ...
