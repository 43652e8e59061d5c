"""The three ingest stages: probe (hash + quarantine), shot split (model), clip extraction."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from typing import Any

from pipelines.ingest.config import DetectorConfig, ExtractConfig, SplitConfig
from pipelines.stages.base import Drop, Resources, Stage

log = logging.getLogger(__name__)


def localize(uri: str, storage_options: dict | None = None) -> str:
    """A local path for ``uri``: itself when local, else a per-node cached download."""
    if "://" not in uri or uri.startswith("file://"):
        return uri.removeprefix("file://")
    import fsspec
    cache = os.path.join(tempfile.gettempdir(), "vidcorpus-cache")
    os.makedirs(cache, exist_ok=True)
    ext = os.path.splitext(uri)[1][:8]
    dest = os.path.join(cache, hashlib.sha1(uri.encode()).hexdigest()[:20] + ext)
    if not os.path.exists(dest):
        tmp = f"{dest}.tmp-{os.getpid()}"
        with fsspec.open(uri, "rb", **(storage_options or {})) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 8 << 20)
        os.replace(tmp, dest)
    return dest


class ProbeStage(Stage):
    """Hash the file (``video_id``) and probe it; unusable files are dropped with an error class."""

    name = "probe"
    resources = Resources(num_cpus=1)

    def __init__(self, storage_options: dict | None = None):
        self.storage_options = storage_options

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        from pipelines.ingest.probe import QuarantineError, hash_file, probe_video
        path = localize(row["uri"], self.storage_options)
        video_id = hash_file(path)[:16]
        try:
            p = probe_video(path)
        except QuarantineError as e:
            raise Drop(e.error_class, e.message, columns={"video_id": video_id}) from None
        return {"video_id": video_id, "container": p.container, "codec": p.codec,
                "pix_fmt": p.pix_fmt, "width": p.width, "height": p.height, "sar": p.sar,
                "fps": p.fps, "duration_s": p.duration_s, "n_frames": p.n_frames,
                "rotation": p.rotation, "has_audio": p.has_audio, "vfr": p.vfr}


class ShotSplitStage(Stage):
    """Decode once at low resolution, detect transitions, turn them into shots (a model stage)."""

    name = "shots"

    def __init__(self, detector: DetectorConfig, split: SplitConfig, actors: int = 1,
                 storage_options: dict | None = None):
        self.detector_config = detector
        self.split = split
        self.storage_options = storage_options
        self.resources = Resources(num_cpus=1, num_gpus=0.25, actors=actors)

    def setup(self) -> None:
        from pipelines.shots import create_detector
        self.detector = create_detector(self.detector_config.name, **self.detector_config.resolved_params())

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        from pipelines.shots import DecodeError, decode_frames, shots_from_transitions
        try:
            frames = decode_frames(localize(row["uri"], self.storage_options))
        except DecodeError as e:
            raise Drop("decode_error", str(e)) from None
        transitions = self.detector.detect(frames)
        shots = shots_from_transitions(frames, transitions, min_len_s=self.split.min_clip_s,
                                       max_len_s=self.split.max_clip_s, trim_frames=self.split.trim_frames)
        if not shots:
            raise Drop("no_usable_shot", f"{len(transitions)} transitions, no shot ≥ {self.split.min_clip_s}s")
        return {"transitions_json": json.dumps([t.to_dict() for t in transitions]),
                "shots_json": json.dumps([s.to_dict() for s in shots])}


class ClipExtractStage(Stage):
    """Write each shot as its own mp4 in the clip store (native resolution, exact first frame)."""

    name = "extract"
    resources = Resources(num_cpus=1)

    def __init__(self, root_url: str, extract: ExtractConfig, split_version: str,
                 storage_options: dict | None = None):
        self.root_url = root_url
        self.extract = extract
        self.split_version = split_version
        self.storage_options = storage_options

    def setup(self) -> None:
        from storage import CorpusRoot
        self.root = CorpusRoot.open(self.root_url, storage_options=self.storage_options)

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        src = localize(row["uri"], self.storage_options)
        shots = json.loads(row["shots_json"])
        clips, errors = [], []
        for i, shot in enumerate(shots):
            try:
                clips.append(self._one_clip(src, row, shot, shots[i + 1] if i + 1 < len(shots) else None))
            except Exception as e:  # one bad span must not lose the video's other clips
                log.warning("clip %s of %s failed: %s", i, row["uri"], e)
                errors.append(f"shot {i}: {type(e).__name__}: {e}")
        if not clips:
            raise Drop("decode_error", "; ".join(errors) or "no clip extracted")
        return {"clips_json": json.dumps(clips), "clip_errors": "; ".join(errors) or None}

    def _one_clip(self, src: str, row: dict, shot: dict, nxt: dict | None) -> dict[str, Any]:
        from pipelines.ingest.extract import extract_clip
        clip_id = make_clip_id(row["video_id"], shot, self.split_version)
        rel = self.root.clip_relpath(row["video_id"], clip_id)
        with tempfile.TemporaryDirectory(prefix="vidcorpus-clip-") as tmp:
            out = os.path.join(tmp, f"{clip_id}.mp4") if not self.root.is_local else self.root.join(rel)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            info = extract_clip(src, shot["start_s"], shot["end_s"], out, start_frame=shot["start_frame"],
                                end_frame=shot["end_frame"], max_side=self.extract.max_side,
                                crf=self.extract.crf, preset=self.extract.preset,
                                allow_stream_copy=self.extract.stream_copy)
            if not self.root.is_local:
                with open(out, "rb") as f:
                    self.root.put_bytes(rel, f.read())
        return {"clip_id": clip_id, "video_id": row["video_id"], "start_s": shot["start_s"],
                "end_s": shot["end_s"], "start_frame": shot["start_frame"], "end_frame": shot["end_frame"],
                "duration_s": info.duration_s, "fps": info.fps, "width": info.width, "height": info.height,
                "n_frames": info.n_frames, "transition_in": shot["transition_in"],
                "transition_out": (nxt or {}).get("transition_in", "end"), "uri": rel,
                "bytes": info.bytes, "method": info.method, "split_version": self.split_version}


def make_clip_id(video_id: str, shot: dict, split_version: str) -> str:
    """Deterministic: the same video, span and split settings always give the same id."""
    key = f"{video_id}:{shot['start_frame']}:{shot['end_frame']}:{shot['start_s']:.6f}:{split_version}"
    return hashlib.sha1(key.encode()).hexdigest()[:20]
