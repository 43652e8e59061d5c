"""The DiT trainer: streamed shards -> packed batches -> rectified flow, EMA, exact resume.

    from generator.train import TrainConfig, train_dit
    result = train_dit(TrainConfig(root="demo_root", dataset="demo", steps=300))

One step: a pack of `data.token_budget` tokens per rank (clips of any size, see
`generator.data`), caption dropout to the null caption, the rectified-flow loss
(`generator.flow`), AdamW with linear warmup, gradient clipping, an EMA of the weights.
Data parallel: torchrun (WORLD_SIZE > 1) or Ray Train (`pipelines/train_dit_ray.py`); every
rank reads its own shards. The DiT's in_channels and text_dim follow the autoencoder and text
encoder unless overridden.

Files: checkpoints in ROOT/models/dit/<run_id>/ (plain dicts: model, ema, optimizer, scheduler,
step, per-rank RNG states and data positions, resolved config, the autoencoder and text encoder
specs, the null caption) with `latest` pointers (`generator.checkpoint`); ROOT/runs/<run_id>/
metrics.jsonl (loss, tokens/s, padding fraction, MFU on GPU) and config.json.

Data: clips are decoded and encoded by the loader (in `data.num_workers` processes, or in this
process on the training device), or read as precomputed `latent.npy` / `text.npy` members:
`generator.precompute.precompute_for_training(config)` writes them once, which is much faster
whenever the autoencoder is more than a pixel passthrough.

Resume (`resume=True`) continues the newest run (or `run_id`) from its latest checkpoint; the
architecture, data and optimisation settings come from the checkpoint, only the budget
(steps / minutes), logging and paths from the new config. Same number of ranks and loader
workers, and the run continues exactly as if it had never stopped.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from generator.checkpoint import capture_rng, latest_run_dir, load_checkpoint, restore_rng, save_checkpoint
from generator.data import ClipMaker, DataConfig, LoaderState, make_loader
from generator.distributed import (
    all_gather_objects, any_rank, barrier, broadcast_object, init_distributed, sum_across)
from generator.flow import FlowConfig, RectifiedFlow
from generator.metrics import MetricsLog, dit_param_split, peak_flops, train_flops
from generator.packing import PackedBatch
from generator.registry import build_model, load_config
from generator.text import TextConfig, load_text_encoder
from generator.vae import load_autoencoder

log = logging.getLogger(__name__)
RESUME_OVERRIDES = ("root", "steps", "minutes", "ckpt_every", "log_every", "keep_checkpoints",
                    "progress", "device", "resume", "cpu_threads")


@dataclass(frozen=True)
class TrainConfig:
    root: str
    dataset: str
    model: str = "dit_tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    autoencoder: str = "pixel"      # "pixel", "pixel:N", a VAE checkpoint / run dir, a diffusers dir
    text: TextConfig = TextConfig()
    data: DataConfig = DataConfig()
    flow: FlowConfig = FlowConfig()
    steps: int | None = 1000        # stop after this many steps ...
    minutes: float | None = None    # ... or when this much wall time has passed
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 50
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    ckpt_every: int = 500
    log_every: int = 10
    keep_checkpoints: int = 2
    run_id: str | None = None
    resume: bool = False
    device: str = "auto"
    precision: str = "auto"         # auto (bf16 autocast on CUDA) | bf16 | fp32
    cpu_threads: int | None = None  # torch intra-op threads (1 is fastest on a busy shared CPU)
    progress: bool = True

    def __post_init__(self):
        if self.steps is None and self.minutes is None:
            raise ValueError("give steps or minutes (or both) so that training ends")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        d.update(text=TextConfig(**d["text"]), data=DataConfig(**d["data"]), flow=FlowConfig(**d["flow"]))
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainHooks:
    """Callbacks for wrappers (Ray Train); both run on every rank."""

    on_log: Callable[[dict[str, Any]], None] | None = None
    on_checkpoint: Callable[[Path | None, int], None] | None = None   # path on rank 0, None elsewhere


@dataclass
class TrainResult:
    run_id: str
    step: int
    checkpoint: Path | None
    seconds: float
    metrics: dict[str, Any]


def new_run_id(prefix: str = "dit") -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)


def resumed_config(saved: dict[str, Any], new: TrainConfig) -> TrainConfig:
    """The checkpoint's config with the new budget, logging and paths."""
    return replace(TrainConfig.from_dict(saved), **{k: getattr(new, k) for k in RESUME_OVERRIDES})


@dataclass
class Window:
    """Sums over the steps since the last log line."""

    t0: float = field(default_factory=time.time)
    steps: int = 0
    loss: float = 0.0
    real: int = 0          # real (non-padding) tokens
    budget: int = 0        # token capacity of the packs
    clips: int = 0
    flops: float = 0.0

    def add(self, batch: PackedBatch, loss: float, flops: float) -> None:
        self.steps += 1
        self.loss += loss
        self.real += batch.n_real
        self.budget += batch.x.shape[0]
        self.clips += batch.n_clips
        self.flops += flops


class Trainer:
    """Holds the model, optimizer, data stream and run files of one training run."""

    def __init__(self, config: TrainConfig, hooks: TrainHooks | None = None):
        if config.cpu_threads:
            torch.set_num_threads(config.cpu_threads)
        self.dist = init_distributed(config.device)
        self.hooks = hooks or TrainHooks()
        ckpt = self._resume_checkpoint(config)
        self.config = config if ckpt is None else resumed_config(ckpt["config"], config)
        self.run_id = ckpt["run_id"] if ckpt else broadcast_object(self.dist, config.run_id or new_run_id())
        root = Path(self.config.root)
        self.ckpt_dir, self.run_dir = root / "models" / "dit" / self.run_id, root / "runs" / self.run_id
        self._build(ckpt)
        self.batches = iter(self._loader(ckpt["data"][self.dist.rank] if ckpt else None))
        self.step = 0
        if ckpt:
            self._load(ckpt)
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", enabled=self.dist.is_main)

    def _resume_checkpoint(self, config: TrainConfig) -> dict[str, Any] | None:
        if not config.resume:
            return None
        kind_dir = Path(config.root) / "models" / "dit"
        run_dir = kind_dir / config.run_id if config.run_id else latest_run_dir(kind_dir)
        if run_dir is None or not (run_dir / "latest").is_file():
            log.warning("resume: no checkpoint under %s, starting a new run", kind_dir)
            return None
        ckpt = load_checkpoint(run_dir)
        if len(ckpt["rng"]) != self.dist.world_size:
            raise ValueError(f"checkpoint was written by {len(ckpt['rng'])} ranks; resume it with the "
                             f"same number (this run has {self.dist.world_size})")
        return ckpt

    def _build(self, ckpt: dict[str, Any] | None) -> None:
        cfg, dev = self.config, self.dist.device
        self.ae = load_autoencoder(ckpt["autoencoder"] if ckpt else cfg.autoencoder, dev).requires_grad_(False)
        self.text = load_text_encoder(ckpt["text_encoder"] if ckpt else cfg.text, dev)
        model_cfg = ckpt["model_config"] if ckpt else load_config(
            cfg.model, **{"in_channels": self.ae.latent_channels, "text_dim": self.text.dim, **cfg.model_overrides})
        torch.manual_seed(cfg.seed)                                       # same init on every rank
        self.model = build_model(model_cfg).to(dev)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.ddp = DistributedDataParallel(self.model, device_ids=[dev.index] if dev.type == "cuda" else None) \
            if self.dist.enabled else self.model
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        warmup = max(1, cfg.warmup_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warmup))
        self.gen = torch.Generator().manual_seed(cfg.seed * 1009 + self.dist.rank)
        self.flow = RectifiedFlow(cfg.flow)
        self.null_text, self.null_mask = self.text.null()
        self.bf16 = dev.type == "cuda" and cfg.precision != "fp32" or cfg.precision == "bf16"
        self.param_split = dit_param_split(self.model)

    def _loader(self, saved: dict[str, Any] | None):
        cfg = self.config
        in_process = cfg.data.num_workers == 0                            # encode on the training device
        ae = self.ae if in_process else copy.deepcopy(self.ae).cpu()
        text = self.text if in_process else copy.deepcopy(self.text).cpu()
        maker = ClipMaker(cfg.data, ae, text, self.model.config.patch_size)
        if saved and saved["num_workers"] != max(1, cfg.data.num_workers):
            raise ValueError(f"the checkpoint's data position has {saved['num_workers']} loader workers; "
                             f"resume with data.num_workers={saved['num_workers']} (got {cfg.data.num_workers})")
        self.loader_state = LoaderState(cfg.data.num_workers, saved)
        dataset_dir = str(Path(cfg.root) / "shards" / cfg.dataset)
        return make_loader(dataset_dir, maker, self.dist.rank, self.dist.world_size, saved)

    def _load(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.step = ckpt["step"]
        restore_rng(ckpt["rng"][self.dist.rank], self.gen)
        log.info("resumed run %s at step %d", self.run_id, self.step)

    # ------------------------------------------------------------------------- steps

    def train_step(self, batch: PackedBatch) -> dict[str, float]:
        """One optimizer step on one pack; returns loss and gradient norm."""
        cfg = self.config
        batch = batch.to(self.dist.device)
        batch = self.flow.drop_captions(batch, self.null_text, self.null_mask, self.gen)
        self.model.train()
        with torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.flow.loss(self.ddp, batch, generator=self.gen)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        update_ema(self.ema, self.model, min(cfg.ema_decay, (1 + self.step) / (10 + self.step)))
        return {"loss": out.loss.item(), "grad_norm": float(grad_norm)}

    def fit(self) -> TrainResult:
        """Train until `steps` or `minutes`; checkpoint every `ckpt_every` steps and at the end."""
        cfg, t_start = self.config, time.time()
        deadline = t_start + 60 * cfg.minutes if cfg.minutes else None
        self._write_run_config()
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train-dit {self.run_id}", unit="step",
                   disable=not (cfg.progress and self.dist.is_main), dynamic_ncols=True)
        window, record, path, saved_at = Window(), {}, None, None
        while not self._done(deadline):
            batch, worker_state = next(self.batches)
            self.loader_state.update(worker_state)
            stats = self.train_step(batch)
            self.step += 1
            window.add(batch, stats["loss"], train_flops(self.model, batch, self.param_split))
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.4f}")
            if self.step % cfg.log_every == 0:
                record, window = self._log(window, stats, t_start), Window()
            if self.step % cfg.ckpt_every == 0:
                path, saved_at = self.save(), self.step
        bar.close()
        if saved_at != self.step:
            path = self.save()
        return TrainResult(self.run_id, self.step, path, time.time() - t_start, record)

    def _done(self, deadline: float | None) -> bool:
        out_of_steps = self.config.steps is not None and self.step >= self.config.steps
        return out_of_steps or any_rank(self.dist, deadline is not None and time.time() >= deadline)

    def _log(self, window: Window, stats: dict[str, float], t_start: float) -> dict[str, Any]:
        real, budget, clips, flops = sum_across(self.dist, [window.real, window.budget, window.clips, window.flops])
        dt = max(time.time() - window.t0, 1e-9)
        steps = max(window.steps, 1)
        record = {"step": self.step, "loss": window.loss / steps, "lr": self.scheduler.get_last_lr()[0],
                  "grad_norm": stats["grad_norm"], "tokens_per_s": real / dt, "steps_per_s": window.steps / dt,
                  "padding": 1.0 - real / max(budget, 1), "clips_per_step": clips / (steps * self.dist.world_size),
                  "tflops_per_s": flops / dt / 1e12, "elapsed_s": time.time() - t_start}
        peak = peak_flops(self.dist.device)
        if peak:
            record["mfu"] = flops / dt / (peak * self.dist.world_size)
        self.metrics.write(record)
        if self.hooks.on_log:
            self.hooks.on_log(record)
        return record

    # ------------------------------------------------------------------------- files

    def checkpoint_dict(self, rng: list[dict], data: list[dict]) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "step": self.step, "run_id": self.run_id, "rng": rng, "data": data,
            "config": self.config.to_dict(), "model_config": self.model.config_dict(),
            "autoencoder": self.ae.spec(), "text_encoder": self.text.spec(),
            "null_text": self.null_text.cpu(), "null_mask": self.null_mask.cpu(),
        }

    def save(self) -> Path | None:
        """Gather every rank's RNG and data position; rank 0 writes the checkpoint."""
        rng = all_gather_objects(self.dist, capture_rng(self.gen))
        data = all_gather_objects(self.dist, self.loader_state.to_dict())
        path = save_checkpoint(self.ckpt_dir, self.checkpoint_dict(rng, data), self.config.keep_checkpoints) \
            if self.dist.is_main else None
        barrier(self.dist)
        if self.hooks.on_checkpoint:
            self.hooks.on_checkpoint(path, self.step)
        return path

    def _write_run_config(self) -> None:
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config = {"train": self.config.to_dict(), "model": self.model.config_dict(),
                      "world_size": self.dist.world_size, "checkpoints": str(self.ckpt_dir)}
            (self.run_dir / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")


def train_dit(config: TrainConfig, hooks: TrainHooks | None = None) -> TrainResult:
    """Train (or resume) a DiT on ROOT/shards/<dataset>; see the module docstring."""
    return Trainer(config, hooks).fit()
