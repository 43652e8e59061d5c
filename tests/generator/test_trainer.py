"""The DiT trainer: exact resume (incl. data position), loader workers, precomputed members,
metrics, sampling to mp4, MFU arithmetic, and a quick check that prompts steer the colour."""

import zlib
from dataclasses import replace
from itertools import islice

import av
import numpy as np
import pytest
import torch

from generator.checkpoint import load_checkpoint
from generator.data import ClipMaker, DataConfig, LoaderState, make_loader
from generator.flow import FlowConfig
from generator.metrics import read_metrics, train_flops
from generator.packing import Clip, collate
from generator.precompute import precompute_dataset
from generator.registry import create_model
from generator.sample import generate, load_generator, sample_to_mp4
from generator.text import TextEncoder
from generator.train import TrainConfig, train_dit
from generator.vae import load_autoencoder
from storage.shards import read_shards

pytestmark = pytest.mark.usefixtures("one_thread")   # fast and bit-exact on a busy shared CPU

DATA = DataConfig(token_budget=256, buffer_size=6, max_frames=5, max_pixels=32 * 32, shuffle_buffer=4, drop_rate=0.1)


def config(root, **kw) -> TrainConfig:
    base = TrainConfig(root=str(root), dataset="toy", autoencoder="pixel:4", data=DATA, steps=8, log_every=2,
                       ckpt_every=100, warmup_steps=3, progress=False)
    return replace(base, **kw)


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(root):
    straight = train_dit(config(root, run_id="straight"))
    train_dit(config(root, run_id="stopped", steps=4))
    resumed = train_dit(config(root, run_id="stopped", steps=8, resume=True))
    assert straight.step == resumed.step == 8
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    for part in ("model", "ema"):
        for name, value in a[part].items():
            assert torch.equal(value, b[part][name]), f"{part}.{name} differs after resume"
    assert a["data"] == b["data"] and a["data"][0]["workers"][0]["epoch"] == 1   # crossed an epoch
    assert torch.equal(a["rng"][0]["generator"], b["rng"][0]["generator"])
    records = read_metrics(root / "runs" / "stopped" / "metrics.jsonl")
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    assert {"loss", "tokens_per_s", "padding", "lr", "clips_per_step"} <= set(records[-1])
    assert (root / "models" / "dit" / "latest").read_text().strip() == "stopped"


def test_loader_workers_resume_exactly_mid_epoch(root):
    maker = ClipMaker(replace(DATA, num_workers=2), load_autoencoder("pixel:4"), TextEncoder(), (1, 2, 2))
    shards = str(root / "shards" / "toy")
    straight = [batch for batch, _ in islice(make_loader(shards, maker), 9)]
    state = LoaderState(2)
    for _, worker_state in islice(make_loader(shards, maker), 3):                 # stop after 3 packs
        state.update(worker_state)
    resumed = [batch for batch, _ in islice(make_loader(shards, maker, resume=state.to_dict()), 6)]
    for want, got in zip(straight[3:], resumed):
        assert want.keys == got.keys and torch.equal(want.x, got.x) and torch.equal(want.text, got.text)


def test_precomputed_latents_and_text_are_used(root):
    maker = ClipMaker(DATA, load_autoencoder("pixel:4"), TextEncoder(), (1, 2, 2))
    manifest = precompute_dataset(root / "shards" / "toy", root / "shards" / "toy-pre", maker, max_count=8)
    assert manifest["n_samples"] == 24 and manifest["extra"]["latents"] == {"kind": "pixel", "downsample": 4}
    raw = next(iter(read_shards(str(root / "shards" / "toy"))))
    pre = next(iter(read_shards(str(root / "shards" / "toy-pre"))))
    assert pre["__key__"] == raw["__key__"] and pre["latent.npy"].dtype == np.float16
    assert pre["json"]["latent_tokens"] == 60                                  # 5 frames x 3 x 4 patches
    key_rng = np.random.default_rng(zlib.crc32(raw["__key__"].encode()))
    torch.testing.assert_close(maker.latent(pre, None), maker.latent(raw, key_rng), atol=2e-3, rtol=0)
    torch.testing.assert_close(maker.caption(pre), maker.caption(raw), atol=2e-3, rtol=0)
    assert train_dit(config(root, dataset="toy-pre", steps=2, run_id="pre")).step == 2


def test_sample_writes_an_h264_mp4_of_the_requested_size(root):
    train_dit(config(root, steps=2, run_id="s"))
    path = sample_to_mp4("a small white square moves right over a red background", root / "out.mp4",
                         frames=5, height=21, width=30, root=str(root), steps=3)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.codec_context.name == "h264"
    assert len(frames) == 5 and frames[0].shape == (22, 30, 3)                 # odd height padded to even


def test_flops_count_matmuls_and_attention():
    model = create_model("dit_tiny")
    clips = [Clip(torch.zeros(n, model.config.patch_dim), (1, 1, n), torch.zeros(t, 32)) for n, t in ((10, 3), (6, 5))]
    batch = collate(clips, token_budget=20)
    tok, txt = 123, 45
    want = 6 * tok * 16 + 6 * txt * 8 + 12 * 2 * 64 * (10 * 10 + 6 * 6 + 10 * 3 + 6 * 5)
    assert train_flops(model, batch, (tok, txt)) == want


COLOURS = {"red": (220, 40, 40), "blue": (40, 70, 220), "green": (40, 170, 70), "yellow": (240, 220, 40)}


def test_a_short_run_makes_the_background_follow_the_prompt(root):
    data = DataConfig(token_budget=256, buffer_size=8, max_frames=3, max_pixels=32 * 32, shuffle_buffer=8)
    # The colour is decided in the first, noisiest sampling steps: train there more (logit_mean 1).
    result = train_dit(config(root, data=data, steps=180, lr=1e-3, warmup_steps=10, ema_decay=0.98,
                              flow=FlowConfig(base_tokens=16, logit_mean=1.0), run_id="learn"))
    gen = load_generator(result.checkpoint, device="cpu")
    prompts = [c for c in COLOURS for _ in range(2)]
    videos = generate(gen, [f"a small white square moves right over a {c} background" for c in prompts],
                      frames=3, height=24, width=32, steps=10, cfg_scale=4.0)
    palette = np.array(list(COLOURS.values()), np.float32)
    hits = 0
    for video, colour in zip(videos, prompts):
        mean = video.reshape(-1, 3).astype(np.float32).mean(0)
        hits += list(COLOURS)[int(((palette - mean) ** 2).sum(1).argmin())] == colour
    assert hits >= 6, f"{hits}/8 clips have the prompted background (chance: 2/8)"


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_through_the_cli(root):
    """`torchrun --nproc_per_node 2 vidcorpus train-dit ...`: gloo DDP, one checkpoint with both ranks' state."""
    import subprocess
    import sys
    from pathlib import Path
    cli = Path(sys.executable).with_name("vidcorpus")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(cli), "train-dit",
           "--root", str(root), "--dataset", "toy", "--vae", "pixel:4", "--steps", "3", "--token-budget", "256",
           "--max-pixels", "1024", "--max-frames", "3", "--run-id", "ddp", "--threads", "1"]
    subprocess.run(cmd, check=True, timeout=600)
    ckpt = load_checkpoint(root / "models" / "dit" / "ddp")
    assert ckpt["step"] == 3 and len(ckpt["data"]) == 2
