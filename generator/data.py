"""Shards -> frames -> latents -> Clips -> packs, with an exactly resumable position.

Each data-parallel rank and each loader worker reads its own shards (`split_shards`); with
fewer shards than rank x worker slots, every slot reads all shards and keeps every n-th sample.
A worker's stream for epoch e is a pure function of (seed, e, slot): shard order permuted by
(seed, e), samples shuffled in a deterministic buffer, and each sample's randomness (temporal
crop offset, token dropping) keyed by (seed, e, slot, sample index). Clips are packed by FFD
over a sliding buffer (`PackQueue`, the policy of `generator.packing.stream_bins`), and the
queue is flushed at the end of each epoch, then the next epoch starts. Streams are endless.

Data position: every pack comes with its worker's state after it was taken,

    {"worker": w, "epoch": e, "consumed": samples read this epoch, "skipped": decode errors,
     "buffer": [[sample, part], ...] clips waiting in the packer, "ready": [[[sample, part], ...], ...]}

and `LoaderState` keeps the newest one per worker plus which worker the DataLoader serves next.
Resuming replays each worker's epoch up to `consumed` without decoding (only the samples still
waiting in the packer are decoded again) and rotates worker ids so the DataLoader's round robin
continues where it stopped. The result is the same pack sequence as an uninterrupted run.

Clip plan (`ClipMaker`): frames `start, start + stride, ...`, 1 + k*ct of them (at most
`max_frames`; None takes the whole clip), downscaled (aspect kept) to at most `max_pixels`, or
NaViT-style to an area drawn per clip log-uniformly in [`min_pixels`, `max_pixels`] (never
upscaled); a latent over the token budget is cut in time into pieces of whole latent frames
(`oversize="split"`). `plan_clip` gives the same plan (frames, size, pieces' token counts) from
(frames, height, width) alone, with the same draws, to plan or benchmark packing without decoding.

Precomputed members are used when present and `use_precomputed`: `latent.npy` (C, t, h, w) raw
autoencoder latents (normalised here with the autoencoder's scale/shift) and `text.npy`
(L, D_text) features of the caption's real tokens (see `generator.precompute`).
"""

from __future__ import annotations

import io
import logging
import math
import random
from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import Any, Iterator

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from generator.packing import (
    Clip, PackedBatch, collate, first_fit_decreasing, kept_tokens, prepare_clip, split_frames)
from generator.patches import grid_size, latent_size
from storage.shards import list_shards, read_shards, split_shards

log = logging.getLogger(__name__)
ItemId = tuple[int, int]            # (sample index in the epoch, part index after splitting)
Item = tuple[ItemId, Clip]


@dataclass(frozen=True)
class DataConfig:
    token_budget: int = 1024        # tokens per pack (per step and rank)
    buffer_size: int = 64           # clips the FFD packer looks at
    min_fill: float = 0.9           # emit bins at least this full (else only the fullest)
    max_frames: int | None = 17     # pixel frames per clip, cut to 1 + k * ct (None: the whole clip)
    frame_stride: int = 1           # take every n-th frame
    max_pixels: int = 64 * 64       # downscale frames (aspect kept) to at most this area
    min_pixels: int | None = None   # NaViT resolution sampling: area log-uniform in [min, max] per clip
    shuffle_buffer: int = 32        # samples
    drop_rate: float = 0.0          # NaViT token dropping
    oversize: str = "split"         # clips over the budget: "split" in time or "error"
    use_precomputed: bool = True    # use latent.npy / text.npy when a sample has them
    num_workers: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None (the whole clip), got {self.max_frames}")
        if self.min_pixels is not None and not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(f"min_pixels must be in (0, max_pixels={self.max_pixels}] or None, got {self.min_pixels}")
        if self.oversize not in ("error", "split"):
            raise ValueError(f"oversize must be 'error' or 'split', got {self.oversize!r}")


# ------------------------------------------------------------------------- frames


def decode_frames(mp4: bytes, start: int, count: int, stride: int = 1) -> np.ndarray:
    """Frames start, start + stride, ... (count of them, fewer if the clip ends): (T, H, W, 3) uint8."""
    frames = []
    with av.open(io.BytesIO(mp4)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k >= start and (k - start) % stride == 0:
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == count:
                    break
    if not frames:
        raise ValueError(f"no frame at index {start} or later")
    return np.stack(frames)


def fit_size(height: int, width: int, max_pixels: int, multiple: int) -> tuple[int, int]:
    """(h, w) near the aspect of (height, width), multiples of `multiple`, h * w <= max_pixels."""
    f = min(1.0, (max_pixels / (height * width)) ** 0.5)
    h, w = (max(multiple, int(v * f) // multiple * multiple) for v in (height, width))
    return h, w


def target_pixels(config: DataConfig, rng: np.random.Generator) -> int:
    """Frame area a clip is downscaled to (at most): `max_pixels`, or drawn NaViT-style per clip."""
    if config.min_pixels is None:
        return config.max_pixels
    return int(math.exp(rng.uniform(math.log(config.min_pixels), math.log(config.max_pixels))))


def to_video(frames: np.ndarray, size: tuple[int, int]) -> Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, h, w) in [-1, 1], resized with antialiasing."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()               # (T, 3, H, W)
    if tuple(x.shape[2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return (x / 127.5 - 1.0).clamp(-1, 1).permute(1, 0, 2, 3).contiguous()  # (3, T, h, w)


def frame_plan(n_frames: int, config: DataConfig, ct: int, rng: np.random.Generator) -> tuple[int, int]:
    """(start, count): count = 1 + k*ct frames (as many as fit), start random among valid ones."""
    available = 1 + (n_frames - 1) // config.frame_stride
    count = available if config.max_frames is None else min(config.max_frames, available)
    count = 1 + ct * ((count - 1) // ct)
    span = 1 + (count - 1) * config.frame_stride
    return int(rng.integers(0, n_frames - span + 1)), count


@dataclass(frozen=True)
class ClipPlan:
    """What `ClipMaker` takes from a clip: `frames` pixel frames at (height, width), cut into pieces."""

    frames: int
    height: int
    width: int
    pieces: list[int]               # tokens of each piece, after token dropping


def plan_clip(n_frames: int, height: int, width: int, config: DataConfig, compression: tuple[int, int, int],
              patch: tuple[int, int, int], rng: np.random.Generator) -> ClipPlan:
    """The plan `ClipMaker` follows for an (n_frames, height, width) clip, without decoding.

    Draws from `rng` like `ClipMaker.raw_latent` (frame start, then the NaViT area), so the same
    seed gives the same plan; pieces follow `split_frames`, token counts after dropping.
    """
    _, count = frame_plan(n_frames, config, compression[0], rng)
    h, w = fit_size(height, width, target_pixels(config, rng), compression[1] * patch[1])
    grid = grid_size(*latent_size(count, h, w, compression), *patch)
    if config.oversize == "error" and grid.n_tokens > config.token_budget:
        raise ValueError(f"a clip of {grid.n_tokens} tokens > token_budget {config.token_budget}")
    lengths = split_frames(grid.nt, grid.nh * grid.nw, config.token_budget)
    return ClipPlan(count, h, w, [kept_tokens(n * grid.nh * grid.nw, config.drop_rate) for n in lengths])


# ------------------------------------------------------------------------- clips


class ClipMaker:
    """sample -> Clip parts that fit the budget: frames -> latent -> patches, caption -> features."""

    def __init__(self, config: DataConfig, autoencoder, text_encoder, patch: tuple[int, int, int]):
        self.config, self.ae, self.text, self.patch = config, autoencoder, text_encoder, tuple(patch)

    @torch.no_grad()
    def raw_latent(self, sample: dict[str, Any], rng: np.random.Generator) -> Tensor:
        """Autoencoder latent (C, t, h, w) of the sample's frames, before normalisation."""
        start, count = frame_plan(int(sample["json"]["n_frames"]), self.config, self.ae.compression[0], rng)
        frames = decode_frames(sample["mp4"], start, count, self.config.frame_stride)
        multiple = self.ae.compression[1] * self.patch[1]                       # whole patches of latents
        size = fit_size(frames.shape[1], frames.shape[2], target_pixels(self.config, rng), multiple)
        video = to_video(frames, size)[None].to(self.ae.scale.device)          # (1, 3, T, h, w)
        return self.ae.encode(video)[0].float().cpu()                          # (C, t, h', w')

    def latent(self, sample: dict[str, Any], rng: np.random.Generator) -> Tensor:
        """Normalised latent (C, t, h, w): latent.npy when present (and allowed), else encoded here."""
        if self.config.use_precomputed and "latent.npy" in sample:
            z = torch.from_numpy(sample["latent.npy"]).float()
            assert z.shape[0] == self.ae.latent_channels, (
                f"{sample['__key__']}: latent.npy has {z.shape[0]} channels, the autoencoder {self.ae.latent_channels}")
        else:
            z = self.raw_latent(sample, rng)
        return self.ae.normalize(z[None])[0]

    def caption(self, sample: dict[str, Any]) -> Tensor:
        """Caption features (L, D_text) of the real tokens."""
        if self.config.use_precomputed and "text.npy" in sample:
            text = torch.from_numpy(sample["text.npy"]).float()
            assert text.shape[1] == self.text.dim, f"text.npy width {text.shape[1]} != encoder's {self.text.dim}"
            return text
        return self.text.encode_one(sample.get("txt", "")).cpu()

    def __call__(self, sample: dict[str, Any], seed: int) -> list[Clip]:
        rng = np.random.default_rng(seed)
        clip = Clip.from_latent(self.latent(sample, rng), self.patch, self.caption(sample), key=sample["__key__"])
        gen = torch.Generator().manual_seed(seed)
        return prepare_clip(clip, self.config.token_budget, self.config.drop_rate, self.config.oversize, gen)


# ------------------------------------------------------------------------- packing


class PackQueue:
    """FFD over a sliding buffer of clips (same policy as `stream_bins`) with a saveable state."""

    def __init__(self, budget: int, buffer_size: int, min_fill: float):
        self.budget, self.buffer_size, self.min_fill = budget, buffer_size, min_fill
        self.buffer: list[Item] = []
        self.ready: deque[list[Item]] = deque()

    def push(self, item: Item) -> None:
        self.buffer.append(item)
        if len(self.buffer) >= self.buffer_size:
            self._emit(final=False)

    def finish(self) -> None:
        """End of stream: every clip left goes into a bin."""
        if self.buffer:
            self._emit(final=True)

    def pop(self) -> list[Item] | None:
        return self.ready.popleft() if self.ready else None

    def _emit(self, final: bool) -> None:
        sizes = [clip.n_tokens for _, clip in self.buffer]
        bins = first_fit_decreasing(sizes, self.budget)
        fill = [sum(sizes[i] for i in b) / self.budget for b in bins]
        full = list(range(len(bins))) if final else (
            [k for k, f in enumerate(fill) if f >= self.min_fill] or [max(range(len(bins)), key=fill.__getitem__)])
        taken = {i for k in full for i in bins[k]}
        self.ready.extend([self.buffer[i] for i in bins[k]] for k in full)
        self.buffer = [it for i, it in enumerate(self.buffer) if i not in taken]

    def state(self) -> dict[str, list]:
        return {"buffer": [list(i) for i, _ in self.buffer], "ready": [[list(i) for i, _ in b] for b in self.ready]}

    def restore(self, state: dict[str, list], clips: dict[ItemId, Clip]) -> None:
        self.buffer = [(tuple(i), clips[tuple(i)]) for i in state["buffer"]]
        self.ready = deque([(tuple(i), clips[tuple(i)]) for i in b] for b in state["ready"])


def fresh_worker_state(worker: int) -> dict[str, Any]:
    return {"worker": worker, "epoch": 0, "consumed": 0, "skipped": 0, "buffer": [], "ready": []}


def _shuffled(samples: Iterator[dict], size: int, rng: random.Random) -> Iterator[dict]:
    """Deterministic shuffle buffer of `size` samples."""
    buffer: list[dict] = []
    for sample in samples:
        buffer.append(sample)
        if len(buffer) >= size:
            yield buffer.pop(rng.randrange(len(buffer)))
    rng.shuffle(buffer)
    yield from buffer


class PackedShardStream(IterableDataset):
    """Endless (PackedBatch, worker state) pairs from a shard dataset for one data-parallel rank."""

    def __init__(self, dataset_dir: str, maker: ClipMaker, rank: int = 0, world_size: int = 1,
                 resume: dict[str, Any] | None = None):
        self.shards = list_shards(dataset_dir)
        if not self.shards:
            raise ValueError(f"dataset {dataset_dir} has no shards")
        self.maker, self.config, self.rank, self.world_size = maker, maker.config, rank, world_size
        self.resume = resume

    def __iter__(self) -> Iterator[tuple[PackedBatch, dict[str, Any]]]:
        info = get_worker_info()
        n, physical = (info.num_workers, info.id) if info else (1, 0)
        resume = self.resume or {"num_workers": n, "next": 0, "workers": {}}
        if resume["num_workers"] != n:
            raise ValueError(f"cannot resume a {resume['num_workers']}-worker data position with {n} workers")
        logical = (physical + resume["next"]) % n
        state = resume["workers"].get(logical) or fresh_worker_state(logical)
        yield from self._packs(logical, n, dict(state))

    def _slot_samples(self, epoch: int, worker: int, n_workers: int) -> Iterator[dict]:
        seed = self.config.seed
        order = np.random.default_rng([seed, epoch]).permutation(len(self.shards))
        shards = [self.shards[i] for i in order]
        slot, n_slots = self.rank * n_workers + worker, self.world_size * n_workers
        if len(shards) >= n_slots:
            stream = iter(read_shards(split_shards(shards, self.rank, self.world_size, worker, n_workers)))
        else:
            stream = (s for i, s in enumerate(read_shards(shards)) if i % n_slots == slot)
        return _shuffled(stream, self.config.shuffle_buffer, random.Random(f"{seed}/{epoch}/{slot}"))

    def _items(self, state: dict, index: int, sample: dict) -> list[Item]:
        seed = int(np.random.SeedSequence([self.config.seed, state["epoch"], self.rank, state["worker"], index])
                   .generate_state(1)[0])
        try:
            parts = self.maker(sample, seed)
        except (av.error.FFmpegError, ValueError) as e:
            log.warning("skipping sample %s: %s: %s", sample.get("__key__"), type(e).__name__, e)
            state["skipped"] += 1
            return []
        return [((index, p), clip) for p, clip in enumerate(parts)]

    def _packs(self, worker: int, n_workers: int, state: dict) -> Iterator[tuple[PackedBatch, dict]]:
        cfg = self.config
        while True:
            fresh = state["consumed"] == 0
            queue = PackQueue(cfg.token_budget, cfg.buffer_size, cfg.min_fill)
            samples = enumerate(self._slot_samples(state["epoch"], worker, n_workers))
            waiting = {i for i, _ in state["buffer"]} | {i for b in state["ready"] for i, _ in b}
            replay = {i: s for i, s in islice(samples, state["consumed"]) if i in waiting}
            queue.restore(state, {k: c for i, s in replay.items() for k, c in self._items(dict(state), i, s)})
            n_packs = yield from self._drain(queue, state)           # packs left when it stopped
            for index, sample in samples:
                for item in self._items(state, index, sample):
                    queue.push(item)
                state["consumed"] = index + 1
                n_packs += (yield from self._drain(queue, state))
            queue.finish()
            n_packs += (yield from self._drain(queue, state))
            if fresh and n_packs == 0:
                raise RuntimeError(f"rank {self.rank} worker {worker} got no usable sample in epoch "
                                   f"{state['epoch']} ({state['skipped']} skipped): check the shards")
            state = {**fresh_worker_state(worker), "epoch": state["epoch"] + 1}

    def _drain(self, queue: PackQueue, state: dict) -> Iterator[tuple[PackedBatch, dict]]:
        n = 0
        while (group := queue.pop()) is not None:
            n += 1
            yield collate([clip for _, clip in group], self.config.token_budget), {**state, **queue.state()}
        return n


class LoaderState:
    """The data position of one rank: newest state per worker and the worker served next."""

    def __init__(self, num_workers: int, saved: dict[str, Any] | None = None):
        self.num_workers = max(1, num_workers)
        saved = saved or {"num_workers": self.num_workers, "next": 0, "workers": {}}
        self.next, self.workers = saved["next"], dict(saved["workers"])

    def update(self, worker_state: dict[str, Any]) -> None:
        self.workers[worker_state["worker"]] = worker_state
        self.next = (worker_state["worker"] + 1) % self.num_workers

    def to_dict(self) -> dict[str, Any]:
        return {"num_workers": self.num_workers, "next": self.next, "workers": dict(self.workers)}


def _keep(item: Any) -> Any:
    return item


def make_loader(dataset_dir: str, maker: ClipMaker, rank: int = 0, world_size: int = 1,
                resume: dict[str, Any] | None = None) -> DataLoader:
    """A DataLoader of (PackedBatch, worker state) over `dataset_dir` for one rank."""
    stream = PackedShardStream(dataset_dir, maker, rank, world_size, resume)
    n = maker.config.num_workers
    return DataLoader(stream, batch_size=None, num_workers=n, collate_fn=_keep,
                      prefetch_factor=2 if n else None)
