"""Shared fixture of the generator tests: a small real shard dataset of coloured clips.

Each clip is a real H.264 mp4 (native size varies: landscape, portrait, square, wide) of a flat
background colour with a small white square moving right; its caption names the colour.
"""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from storage.shards import ShardWriter

TOY_COLORS = {"red": (220, 40, 40), "blue": (40, 70, 220), "green": (40, 170, 70), "yellow": (240, 220, 40)}
TOY_SIZES = ((64, 48), (48, 64), (64, 64), (96, 40))


def encode_clip(rgb: tuple[int, int, int], width: int, height: int, frames: int) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18"}
        for i in range(frames):
            frame = np.empty((height, width, 3), np.uint8)
            frame[:] = rgb
            x = (3 * i) % (width - 8)
            frame[height // 3:height // 3 + 8, x:x + 8] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return buf.getvalue()


def toy_caption(color: str) -> str:
    return f"a small white square moves right over a {color} background"


def write_toy_dataset(out_dir: Path, n: int = 24, per_shard: int = 4, frames: int = 9) -> Path:
    """`n` clips cycling through the colours and sizes, `per_shard` per shard."""
    names = list(TOY_COLORS)
    with ShardWriter(out_dir, out_dir.name, max_count=per_shard) as writer:
        for i in range(n):
            color, (w, h) = names[i % len(names)], TOY_SIZES[(i // len(names)) % len(TOY_SIZES)]
            key = f"toy{i:04d}"
            writer.write({"__key__": key, "mp4": encode_clip(TOY_COLORS[color], w, h, frames),
                          "txt": toy_caption(color),
                          "json": dict(clip_id=key, video_id=f"v{i:04d}", uri=f"toy://{key}", start_s=0.0,
                                       end_s=frames / 24, fps=24.0, width=w, height=h, n_frames=frames)})
    return out_dir


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory) -> Path:
    """A corpus root with ROOT/shards/toy (24 clips in 6 shards). Tests write runs into copies."""
    root = tmp_path_factory.mktemp("toy_root")
    write_toy_dataset(root / "shards" / "toy")
    return root


@pytest.fixture
def root(toy_root, tmp_path) -> Path:
    """A fresh corpus root per test whose shards link to the shared toy dataset."""
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "toy").symlink_to(toy_root / "shards" / "toy")
    return tmp_path


@pytest.fixture
def one_thread():
    """One intra-op thread: bit-exact CPU runs (multi-threaded reductions may differ in the last
    bit), and much faster than two on a busy shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
