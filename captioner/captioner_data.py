"""Captioner data: frames sampled from clip files, caption items, training batches.

Frames are sampled once per clip at the centres of ``n`` equal segments and squashed to the
vision tower's square input (object area fractions survive a squash; a centre crop would cut
objects off). Training samples ``2K`` frames per clip and draws one of each pair, a cheap
temporal jitter; optional time reversal and horizontal/vertical flips swap direction words in
the caption (``reverse_swaps``, e.g. left↔right, grows↔shrinks; ``hflip_swaps`` left↔right;
``vflip_swaps`` up↔down) — valid for the synthetic world, not for all real video. Every random choice derives from ``(seed, epoch, index)``, so a resumed run sees
exactly the batches an uninterrupted run sees.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from captioner.tokenizer import CaptionTokenizer


@dataclass(frozen=True)
class CaptionItem:
    """One training/eval clip: media path (a clip-store file starting at 0), reference caption."""

    path: str
    caption: str
    attributes: dict[str, Any] | None = None  # synthetic ground truth, when known
    clip_id: str | None = None
    alt_text: str | None = None


def as_items(items: Iterable[CaptionItem | Sequence]) -> list[CaptionItem]:
    """Accept ``CaptionItem``s or ``(path, caption[, attributes])`` tuples."""
    return [it if isinstance(it, CaptionItem) else CaptionItem(str(it[0]), str(it[1]), *it[2:3])
            for it in items]


# ------------------------------------------------------------------------------ frames


def segment_centres(n_total: int, n: int) -> list[int]:
    """Indices of the centres of ``n`` equal segments of ``n_total`` frames."""
    return [min(n_total - 1, int((i + 0.5) * n_total / n)) for i in range(n)]


def sample_frames(path: str, n: int, size: int | tuple[int, int]) -> np.ndarray:
    """(n, 3, H, W) uint8 RGB frames at segment centres, squashed to ``size``.

    When the container knows its frame count only the kept frames are converted and decoding
    stops after the last one; otherwise every frame is decoded (small) and the centres picked.
    """
    h, w = _hw(size)

    def small(frame) -> np.ndarray:  # (H, W, 3)
        return frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()

    total = _frame_count(path)
    if total > 0:
        centres = segment_centres(total, n)
        kept = {i: small(f) for i, f in _decode_until(path, max(centres)) if i in set(centres)}
        if len(kept) == len(set(centres)):
            return np.stack([kept[c] for c in centres]).transpose(0, 3, 1, 2)
    frames = [small(f) for _, f in _decode_until(path, None)]
    if not frames:
        raise ValueError(f"{path}: no decodable video frames")
    return np.stack([frames[i] for i in segment_centres(len(frames), n)]).transpose(0, 3, 1, 2)


def _frame_count(path: str) -> int:
    import av

    with av.open(str(path)) as container:
        return int(container.streams.video[0].frames or 0)


def _decode_until(path: str, last: int | None):
    """(index, frame) in presentation order, stopping after index ``last`` (None: all)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            yield i, frame
            if last is not None and i >= last:
                return


def load_frames(paths: Sequence[str], n: int, size: int | tuple[int, int],
                progress: bool = False) -> torch.Tensor:
    """(N, n, 3, H, W) uint8 frames of every clip, decoded once."""
    from tqdm.auto import tqdm

    out = [sample_frames(p, n, size) for p in tqdm(paths, desc="frames", unit="clip",
                                                    disable=not progress)]
    return torch.from_numpy(np.stack(out)) if out else torch.empty(0, n, 3, *_hw(size),
                                                                   dtype=torch.uint8)


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


# ----------------------------------------------------------------------------- batches


def swap_words(text: str, swaps: dict[str, str]) -> str:
    """Replace whole words by their swap partner, all at once (``left``→``right`` and back)."""
    if not swaps:
        return text
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, swaps)) + r")\b")
    return pattern.sub(lambda m: swaps[m.group(1)], text)


def shift_clip(clip: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Translate every frame of ``clip`` (K, 3, H, W) by (dx, dy) pixels, replicating edges."""
    if dx == 0 and dy == 0:
        return clip
    k, c, h, w = clip.shape
    pad = (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0))  # left, right, top, bottom
    padded = torch.nn.functional.pad(clip.float(), pad, mode="replicate")  # (K, 3, H', W')
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[:, :, top:top + h, left:left + w].to(clip.dtype)  # (K, 3, H, W)


def collate(ids: list[list[int]], frames: torch.Tensor, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask`` (B, T) and ``frames`` (B, K, 3, H, W)."""
    t = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), t), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    return {"frames": frames, "input_ids": input_ids, "attention_mask": mask}


@dataclass
class CaptionTrainSet:
    """Clips with ``2K`` cached frames and tokenised captions; deterministic batches by position."""

    frames: torch.Tensor  # (N, 2K, 3, H, W) uint8
    captions: list[str]
    tokenizer: CaptionTokenizer
    max_len: int
    seed: int = 0
    reverse_swaps: dict[str, str] | None = None
    max_shift: int = 0  # random translation of the whole clip, pixels (edges replicated)
    hflip_swaps: dict[str, str] | None = None  # mirror left-right with these word swaps
    vflip_swaps: dict[str, str] | None = None  # mirror top-bottom with these word swaps
    no_flip: torch.Tensor | None = None  # (N,) bool: clips never mirrored (objects in an order)
    _ids: dict[tuple, list[int]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def k(self) -> int:
        return self.frames.shape[1] // 2

    def order(self, epoch: int) -> np.ndarray:
        """The shuffled clip order of ``epoch``."""
        return np.random.default_rng([self.seed, epoch]).permutation(len(self))

    def batch(self, epoch: int, start: int, size: int) -> dict[str, torch.Tensor]:
        """Batch of clips ``order(epoch)[start:start + size]``, with jitter, reversal and flips."""
        picks = self.order(epoch)[start:start + size]
        frames, ids = [], []
        for idx in picks:
            rng = np.random.default_rng([self.seed, epoch, int(idx)])
            offsets = rng.integers(0, 2, size=self.k)
            reverse = bool(self.reverse_swaps) and bool(rng.random() < 0.5)
            clip = self.frames[idx, 2 * np.arange(self.k) + offsets]  # (K, 3, H, W)
            clip = shift_clip(clip, *rng.integers(-self.max_shift, self.max_shift + 1, size=2))
            mirror = self.no_flip is None or not bool(self.no_flip[idx])
            hflip = bool(self.hflip_swaps) and bool(rng.random() < 0.5) and mirror
            vflip = bool(self.vflip_swaps) and bool(rng.random() < 0.5) and mirror
            dims = [d for d, on in ((0, reverse), (3, hflip), (2, vflip)) if on]
            frames.append(clip.flip(dims) if dims else clip)
            ids.append(self._caption_ids(int(idx), reverse, hflip, vflip))
        return collate(ids, torch.stack(frames), self.tokenizer.pad_id)

    def _caption_ids(self, idx: int, reverse: bool, hflip: bool = False,
                     vflip: bool = False) -> list[int]:
        key = (idx, reverse, hflip, vflip)
        if key not in self._ids:
            text = self.captions[idx]
            for on, swaps in ((reverse, self.reverse_swaps), (hflip, self.hflip_swaps),
                              (vflip, self.vflip_swaps)):
                text = swap_words(text, swaps) if on else text
            self._ids[key] = self.tokenizer.caption_ids(text, self.max_len)
        return self._ids[key]


# ------------------------------------------------------------------ synthetic world shots


def shots_from_truth(world_dir: str | Path, out_dir: str | Path,
                     clean_only: bool = True) -> list[CaptionItem]:
    """Cut every shot of a synthetic world (``truth.json``) into its own mp4 clip.

    A shot's clean frames ``[start_frame, end_frame)`` become ``out_dir/<video>_<shot>.mp4``
    (H.264, sides rounded down to even). ``clean_only`` skips shots with defects and broken
    files. Items carry the ground-truth caption, attributes and alt text.
    """
    world, out = Path(world_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth = json.loads((world / "truth.json").read_text())
    items = []
    for video in truth["videos"]:
        shots = [s for s in video["shots"] if not (clean_only and s["defects"])]
        if video["broken"] or not shots:
            continue
        paths = _cut_video(world / video["file"], shots, out, video["fps"])
        items += [CaptionItem(str(p), s["caption"], s["attributes"], p.stem, s["alt_text"])
                  for p, s in zip(paths, shots)]
    return items


def _cut_video(src: Path, shots: list[dict], out: Path, fps: float) -> list[Path]:
    """Write each shot's frames of ``src`` to its own file (skipping files already there)."""
    paths = [out / f"{src.stem}_s{s['index']:02d}.mp4" for s in shots]
    if all(p.exists() for p in paths):
        return paths
    frames = list(_decode_rgb(src))
    for path, shot in zip(paths, shots):
        write_clip(path, frames[shot["start_frame"]: shot["end_frame"]], fps)
    return paths


def _decode_rgb(path: Path):
    for _, frame in _decode_until(str(path), None):
        yield frame.to_ndarray(format="rgb24")


def write_clip(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """Encode RGB frames (H, W, 3) as H.264 mp4 (tmp then rename)."""
    import av
    from fractions import Fraction

    h, w = frames[0].shape[0] // 2 * 2, frames[0].shape[1] // 2 * 2
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18"}
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:h, :w]), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    tmp.replace(path)
