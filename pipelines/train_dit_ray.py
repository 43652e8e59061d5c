"""Train the DiT across a Ray cluster: a Ray Train `TorchTrainer` running `generator.train`.

    from generator.train import TrainConfig
    from pipelines.train_dit_ray import train_dit_ray
    result = train_dit_ray(TrainConfig(root="/shared/root", dataset="web", steps=10_000), num_workers=8)

Each Ray Train worker is one data-parallel rank: Ray sets up the torch process group (NCCL on
GPUs, gloo on CPUs) and `generator.train.Trainer` uses it, reads its own shards and keeps its
own data position, exactly as under torchrun. Checkpoints are written by rank 0 to
ROOT/models/dit/<run_id>/ (ROOT must be a filesystem every node sees) and each one is also
reported to Ray Train, which keeps a copy under ROOT/runs/ray/<run_id>/. Resume with
`resume=True` and the same number of workers.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from generator.train import TrainConfig, TrainHooks, new_run_id, train_dit
from pipelines.stages.runners import RayRunner

log = logging.getLogger(__name__)


@dataclass
class RayTrainResult:
    run_id: str
    checkpoint: Path | None        # our newest checkpoint (ROOT/models/dit/<run_id>/...)
    ray_checkpoint: str | None     # Ray Train's copy of it
    metrics: dict[str, Any]


def _report_checkpoint(path: Path | None, step: int) -> None:
    """Every rank reports (Ray Train synchronises reports); rank 0 attaches the checkpoint file."""
    import ray.train

    if path is None:
        ray.train.report({"step": step})
        return
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy2(path, Path(tmp) / path.name)
        ray.train.report({"step": step, "checkpoint_path": str(path)},
                         checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker (one rank each)."""
    config = TrainConfig.from_dict(loop_config["config"])
    train_dit(config, TrainHooks(on_checkpoint=_report_checkpoint))


def train_dit_ray(config: TrainConfig, num_workers: int, use_gpu: bool | None = None,
                  address: str | None = None, cpus_per_worker: float = 1.0) -> RayTrainResult:
    """Run `train_dit(config)` on `num_workers` Ray Train workers; `use_gpu` None = if the cluster has GPUs."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray = RayRunner(address=address)._init()
    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) >= num_workers
    root = Path(config.root).resolve()
    config = replace(config, root=str(root), run_id=config.run_id or new_run_id(),
                     device="auto" if use_gpu else "cpu")
    trainer = TorchTrainer(
        _train_loop_per_worker, train_loop_config={"config": config.to_dict()},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(name=config.run_id, storage_path=str(root / "runs" / "ray")))
    result = trainer.fit()
    metrics = dict(result.metrics or {})
    path = metrics.get("checkpoint_path")
    return RayTrainResult(config.run_id, Path(path) if path else None,
                          result.checkpoint.path if result.checkpoint else None, metrics)
