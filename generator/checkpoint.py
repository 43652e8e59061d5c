"""Generator checkpoints: plain dicts with `latest` pointers, and RNG state capture.

Layout (ARCHITECTURE.md, "The corpus root"):

    ROOT/models/<kind>/<run_id>/ckpt-step0000200.pt    one file per saved step (newest `keep` kept)
    ROOT/models/<kind>/<run_id>/latest                 "ckpt-step0000200.pt"
    ROOT/models/<kind>/latest                          "<run_id>" (the run saved last)

`resolve_checkpoint` accepts a checkpoint file, a run directory or a kind directory and follows
the pointers. Files are written to a tmp name and renamed; pointers are written last, so a
killed save never leaves a pointer to a partial file. Local paths only.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

LATEST = "latest"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f"ckpt-step{step:07d}.pt"


def _write_pointer(directory: Path, target: str) -> None:
    tmp = directory / f"{LATEST}.tmp-{os.getpid()}"
    tmp.write_text(target + "\n")
    os.replace(tmp, directory / LATEST)


def save_checkpoint(run_dir: str | Path, ckpt: dict[str, Any], keep: int = 2, parent_pointer: bool = True) -> Path:
    """Write `ckpt` (holds "step"), point the run's (and its parent's) `latest` at it, prune old ones."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(run_dir, ckpt["step"])
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    _write_pointer(run_dir, path.name)
    if parent_pointer:
        _write_pointer(run_dir.parent, run_dir.name)
    if keep > 0:
        for old in sorted(run_dir.glob("ckpt-step*.pt"))[:-keep]:
            old.unlink()
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file from a file, a run directory or a kind directory (via `latest` pointers)."""
    path = Path(path)
    for _ in range(3):
        if not path.is_dir():
            break
        pointer = path / LATEST
        if not pointer.is_file():
            raise FileNotFoundError(f"{path} has no '{LATEST}' pointer: not a checkpoint directory")
        path = path / pointer.read_text().strip()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def latest_run_dir(kind_dir: str | Path) -> Path | None:
    """The run directory `kind_dir/latest` points at, or None when there is none."""
    pointer = Path(kind_dir) / LATEST
    return Path(kind_dir) / pointer.read_text().strip() if pointer.is_file() else None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict at `path` (file or directory). Local, trusted files only."""
    return torch.load(resolve_checkpoint(path), map_location=map_location, weights_only=False)


def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Global torch / numpy / python RNG states (+ CUDA, + a trainer's own generator)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Inverse of `capture_rng`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])
