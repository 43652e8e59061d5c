"""Captioner checkpoints: plain dicts in ``<run dir>/ckpt-step<N>.pt`` with a ``latest`` pointer.

A checkpoint holds ``model``, ``optimizer``, ``scheduler``, ``step``, ``rng`` (torch, numpy,
python), ``data`` (epoch and position in it), ``config`` (resolved), ``tokenizer`` (JSON) and
``vocab_size``, so resuming and inference take the architecture from the checkpoint alone
(nanoGPT style). Files are written to a tmp name and renamed; ``latest`` is written last.
"""
from __future__ import annotations

import hashlib
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

LATEST = "latest"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f"ckpt-step{step:07d}.pt"


def save_checkpoint(run_dir: str | Path, ckpt: dict[str, Any], keep: int = 2) -> Path:
    """Write ``ckpt`` (must hold ``step``), point ``latest`` at it, keep the newest ``keep``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(run_dir, ckpt["step"])
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    pointer = run_dir / f"{LATEST}.tmp"
    pointer.write_text(path.name + "\n")
    os.replace(pointer, run_dir / LATEST)
    for old in sorted(run_dir.glob("ckpt-step*.pt"))[:-keep] if keep > 0 else []:
        old.unlink()
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file from a file path or a run directory (via its ``latest`` pointer)."""
    path = Path(path)
    if path.is_dir():
        pointer = path / LATEST
        if not pointer.exists():
            raise FileNotFoundError(f"{path}: no '{LATEST}' pointer; not a captioner run directory")
        path = path / pointer.read_text().strip()
    if not path.is_file():
        raise FileNotFoundError(f"captioner checkpoint {path} does not exist")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict at ``path`` (a file or a run directory). Local, trusted files only."""
    return torch.load(resolve_checkpoint(path), map_location=map_location, weights_only=False)


def checkpoint_name(path: str | Path) -> str:
    """Stable short name of a checkpoint: ``<run dir name>@step<N>``, read from the file name.

    A file not named ``ckpt-step<N>.pt`` gets ``<file stem>@<sha1 of its bytes, 10 hex>``.
    The caption source written by this checkpoint is ``captioner:<name>``.
    """
    file = resolve_checkpoint(path)
    match = re.fullmatch(r"ckpt-step(\d+)\.pt", file.name)
    if match:
        return f"{file.parent.name}@step{int(match.group(1))}"
    digest = hashlib.sha1()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"{file.stem}@{digest.hexdigest()[:10]}"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
