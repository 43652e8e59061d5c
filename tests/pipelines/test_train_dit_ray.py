"""Ray Train: two CPU workers on gloo train the DiT as two data-parallel ranks and checkpoint."""

import io

import av
import numpy as np
import pytest
import torch

from generator.checkpoint import load_checkpoint
from generator.data import DataConfig
from generator.train import TrainConfig
from storage.shards import ShardWriter


def write_shards(out_dir, n: int = 12, per_shard: int = 3) -> None:
    """Small real dataset: flat-colour H.264 clips (two sizes) with captions naming the colour."""
    colours = {"red": (220, 40, 40), "blue": (40, 70, 220), "green": (40, 170, 70)}
    with ShardWriter(out_dir, "toy", max_count=per_shard) as writer:
        for i in range(n):
            name, (w, h) = list(colours)[i % 3], ((48, 32), (32, 48))[i % 2]
            buf = io.BytesIO()
            with av.open(buf, "w", format="mp4") as container:
                stream = container.add_stream("libx264", rate=24)
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                for _ in range(5):
                    frame = np.full((h, w, 3), colours[name], np.uint8)
                    container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
                container.mux(stream.encode(None))
            key = f"clip{i:03d}"
            writer.write({"__key__": key, "mp4": buf.getvalue(), "txt": f"a {name} background",
                          "json": dict(clip_id=key, video_id=key, uri=key, start_s=0.0, end_s=5 / 24, fps=24.0,
                                       width=w, height=h, n_frames=5)})


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_two_gloo_workers_train_and_checkpoint(tmp_path, local_ray):
    from pipelines.train_dit_ray import train_dit_ray
    write_shards(tmp_path / "shards" / "toy")
    cfg = TrainConfig(root=str(tmp_path), dataset="toy", autoencoder="pixel:4", steps=4, ckpt_every=2, log_every=2,
                      data=DataConfig(token_budget=128, buffer_size=2, max_frames=3, max_pixels=32 * 32),
                      run_id="ray", progress=False)
    result = train_dit_ray(cfg, num_workers=2, use_gpu=False)
    assert result.checkpoint == tmp_path / "models" / "dit" / "ray" / "ckpt-step0000004.pt"
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["step"] == 4 and len(ckpt["rng"]) == len(ckpt["data"]) == 2     # one entry per rank
    assert not torch.equal(ckpt["rng"][0]["generator"], ckpt["rng"][1]["generator"])
    assert ckpt["model"].keys() == ckpt["ema"].keys()
    assert result.ray_checkpoint is not None                                     # Ray Train kept a copy
    assert (tmp_path / "runs" / "ray" / "metrics.jsonl").is_file()
