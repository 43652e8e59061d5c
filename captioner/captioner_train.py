"""Training the video captioner: one readable loop with eval, checkpoints and exact resume.

``train_captioner(train_items, val_items, config, out_dir)`` trains on ``(clip path, caption[,
attributes])`` items, evaluates every ``train.eval_every`` steps (val loss, BLEU-4, CIDEr and,
with a vocabulary or item attributes, attribute accuracy), writes ``metrics.jsonl`` and
checkpoints with a ``latest`` pointer into ``out_dir``. Calling it again on the same ``out_dir``
resumes from ``latest``: architecture and tokenizer come from the checkpoint, the ``train``
section from the call; parameters, optimizer, schedule, RNG and data position are restored, so
an interrupted run ends with the parameters of an uninterrupted one (deterministic CPU).
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from captioner.captioner_data import CaptionItem, CaptionTrainSet, as_items, collate, load_frames
from captioner.captioner_eval import Vocabulary, attribute_accuracy, caption_scores, parse_caption
from captioner.captioner_infer import autocast, default_device, greedy_captions
from captioner.captioner_model import VideoCaptioner, parameter_groups, split_clips
from captioner.checkpoint import (LATEST, load_checkpoint, rng_state, save_checkpoint,
                                  set_rng_state)
from captioner.registry import CaptionerConfig, load_config
from captioner.tokenizer import CaptionTokenizer, tokenizer_from_lm_dir, train_bpe

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where the run is and how it ended."""

    run_dir: Path
    checkpoint: Path
    step: int
    train_seconds: float  # in optimizer steps, summed over resumed sessions
    wall_seconds: float  # this call's fit(), evaluations and checkpoints included
    metrics: dict[str, Any]  # the final evaluation
    history: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[str] = field(default_factory=list)  # final captions of the val items


@dataclass
class _State:
    step: int = 0
    epoch: int = 0
    position: int = 0
    loss_sum: float = 0.0
    loss_n: int = 0
    step_seconds: float = 0.0  # time spent in optimizer steps (evals and checkpoints excluded)


def train_captioner(train_items: Iterable[CaptionItem | Sequence], val_items: Iterable[CaptionItem | Sequence],
                    config: str | dict | CaptionerConfig, out_dir: str | Path, *,
                    vocabulary: Vocabulary | None = None, resume: bool = True,
                    stop_at_step: int | None = None, device: str | None = None,
                    progress: bool = True) -> TrainResult:
    """Train (or resume) a captioner; see the module docstring. ``stop_at_step`` ends early."""
    train_items, val_items = as_items(train_items), as_items(val_items)
    if not train_items or not val_items:
        raise ValueError(f"need train and val clips; got {len(train_items)} and {len(val_items)}")
    config = config if isinstance(config, CaptionerConfig) else load_config(config)
    trainer = CaptionerTrainer(config, Path(out_dir), torch.device(device) if device else default_device())
    trainer.prepare(train_items, val_items, vocabulary, resume, progress)
    return trainer.fit(stop_at_step, progress)


class CaptionerTrainer:
    """Holds the model, optimizer, data and state of one run; ``fit`` is the loop."""

    def __init__(self, config: CaptionerConfig, run_dir: Path, device: torch.device):
        self.config, self.run_dir, self.device = config, run_dir, device
        self.tc = config.train
        self.state = _State()
        self.history: list[dict[str, Any]] = []

    # ---------------------------------------------------------------- setup
    def prepare(self, train_items: list[CaptionItem], val_items: list[CaptionItem],
                vocabulary: Vocabulary | None, resume: bool, progress: bool) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.tc.num_threads:
            torch.set_num_threads(self.tc.num_threads)
        ckpt = load_checkpoint(self.run_dir) if resume and (self.run_dir / LATEST).exists() else None
        if ckpt is not None:  # architecture and tokenizer from the checkpoint, train from the call
            self.config = load_config(ckpt["config"], train=self.tc.model_dump())
            self.tokenizer = CaptionTokenizer.from_dict(ckpt["tokenizer"])
        else:
            self.tokenizer = self._new_tokenizer([it.caption for it in train_items])
        torch.manual_seed(self.tc.seed)
        self.model = VideoCaptioner(self.config, self.tokenizer.vocab_size,
                                    load_weights=ckpt is None,
                                    lm_config=ckpt.get("lm_config") if ckpt else None).to(self.device)
        self.optimizer = torch.optim.AdamW(parameter_groups(
            self.model, self.tc.lr, self.tc.vision_lr, self.tc.weight_decay), betas=(0.9, 0.98),
            fused=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, [self._vision_lr_factor if g["visual"] else self._lr_factor
                             for g in self.optimizer.param_groups])
        self._load_data(train_items, val_items, vocabulary, progress)
        if ckpt is not None:
            self._restore(ckpt)

    def _new_tokenizer(self, captions: list[str]) -> CaptionTokenizer:
        if self.config.tokenizer.kind == "lm":
            return tokenizer_from_lm_dir(self.config.lm.pretrained)
        return train_bpe(captions, self.config.tokenizer.vocab_size)

    def _lr_factor(self, step: int) -> float:
        """Linear warmup, then cosine decay to 10% at ``max_steps``."""
        warm = max(1, self.tc.warmup_steps)
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, self.tc.max_steps - warm))
        return 0.1 + 0.45 * (1 + math.cos(math.pi * t))

    def _vision_lr_factor(self, step: int) -> float:
        """The vision tower warms up over ``vision_warmup_steps``, so the LM learns to read its
        (random) features before their gradients are informative enough to change them."""
        return self._lr_factor(step) * min(1.0, (step + 1) / max(1, self.tc.vision_warmup_steps))

    def _load_data(self, train_items, val_items, vocabulary, progress: bool) -> None:
        k, size = self.config.vision.frames, self.model.image_size
        frames = load_frames([it.path for it in train_items], 2 * k, size, progress)
        mirrors = self.tc.hflip_swaps or self.tc.vflip_swaps
        no_flip = split_clips(frames) if mirrors and not self.tc.flip_two_objects else None
        if no_flip is not None:
            log.info("flips: %d of %d training clips show two objects and are not mirrored",
                     int(no_flip.sum()), len(no_flip))
        self.train_set = CaptionTrainSet(
            frames, [it.caption for it in train_items], self.tokenizer,
            self.config.tokenizer.max_len, self.tc.seed, self.tc.reverse_swaps, self.tc.max_shift,
            self.tc.hflip_swaps, self.tc.vflip_swaps, no_flip)
        self.val_items = val_items
        self.val_frames = load_frames([it.path for it in val_items], k, size, progress)
        self.val_truths = [_truth(it, vocabulary) for it in val_items]
        self.vocabulary = vocabulary

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.state = _State(ckpt["step"], ckpt["data"]["epoch"], ckpt["data"]["position"],
                            step_seconds=ckpt.get("train_seconds", 0.0))
        self.history = list(ckpt.get("history", []))
        set_rng_state(ckpt["rng"])
        log.info("resumed %s at step %d", self.run_dir, self.state.step)

    # ---------------------------------------------------------------- loop
    def fit(self, stop_at_step: int | None = None, progress: bool = True) -> TrainResult:
        from tqdm.auto import tqdm

        end = min(self.tc.max_steps, stop_at_step or self.tc.max_steps)
        t0, s = time.perf_counter(), self.state
        self.model.train()
        with tqdm(total=end, initial=s.step, desc="train-captioner", unit="step",
                  disable=not progress) as bar:
            while s.step < end and not self._out_of_time(t0):
                t_step = time.perf_counter()
                loss = self._train_step(self._next_batch())
                s.step, s.loss_sum, s.loss_n = s.step + 1, s.loss_sum + loss, s.loss_n + 1
                s.step_seconds += time.perf_counter() - t_step
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
                if s.step % self.tc.eval_every == 0 and s.step < end:
                    self._evaluate(t0, final=False)
                if s.step % self.tc.checkpoint_every == 0 and s.step < end:
                    self._save()
        metrics, predictions = self._evaluate(t0, final=True)
        path = self._save()
        return TrainResult(self.run_dir, path, s.step, s.step_seconds, time.perf_counter() - t0,
                           metrics, self.history, predictions)

    def _out_of_time(self, t0: float) -> bool:
        return self.tc.max_minutes is not None and time.perf_counter() - t0 > 60 * self.tc.max_minutes

    def _next_batch(self) -> dict[str, torch.Tensor]:
        """The batch at the current data position, then advance it (remainders are dropped)."""
        s, n = self.state, len(self.train_set)
        size = min(self.tc.batch_size, n)
        if s.position + size > n:
            s.epoch, s.position = s.epoch + 1, 0
        batch = self.train_set.batch(s.epoch, s.position, size)
        s.position += size
        return batch

    def _train_step(self, batch: dict[str, torch.Tensor]) -> float:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if self.tc.word_dropout > 0:
            batch = self._drop_words(batch)
        with autocast(self.device):
            loss, _ = self.model(**batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tc.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return float(loss.detach())

    def _drop_words(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The LM reads pad for a ``word_dropout`` fraction of caption tokens (not bos); the
        labels keep the real ids. Draws from torch's RNG, which checkpoints carry."""
        ids = batch["input_ids"]  # (B, T)
        drop = torch.rand(ids.shape, device=ids.device) < self.tc.word_dropout
        drop[:, 0] = False
        dropped = ids.masked_fill(drop & batch["attention_mask"].bool(), self.tokenizer.pad_id)
        return {**batch, "target_ids": ids, "input_ids": dropped}

    # ---------------------------------------------------------------- eval and save
    def _evaluate(self, t0: float, final: bool) -> tuple[dict[str, Any], list[str]]:
        """Val loss on every val clip; captions, BLEU-4, CIDEr, attributes on ``eval_items``."""
        s = self.state
        n = len(self.val_items) if final else min(len(self.val_items), self.tc.eval_items)
        texts, _ = greedy_captions(self.model, self.tokenizer, self.val_frames[:n])
        refs = {str(i): [it.caption] for i, it in enumerate(self.val_items[:n])}
        metrics: dict[str, Any] = {
            "step": s.step, "final": final, "train_loss": s.loss_sum / max(1, s.loss_n),
            "val_loss": self._val_loss(), "lr": self.scheduler.get_last_lr()[0],
            "elapsed_s": round(time.perf_counter() - t0, 1), "train_s": round(s.step_seconds, 1),
            "n_val": n,
            **caption_scores({str(i): t for i, t in enumerate(texts)}, refs)}
        known = [(t, tr) for t, tr in zip(texts, self.val_truths[:n]) if tr is not None]
        if known and self.vocabulary is not None:
            acc = attribute_accuracy([t for t, _ in known], [tr for _, tr in known], self.vocabulary)
            metrics.update({f"attr_{k}": v for k, v in acc.items()})
        s.loss_sum, s.loss_n = 0.0, 0
        self.history.append(metrics)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        log.info("captioner eval: %s", {k: v for k, v in metrics.items() if not k.startswith("attr_")})
        return metrics, texts

    @torch.no_grad()
    def _val_loss(self) -> float:
        self.model.eval()
        total, count = 0.0, 0
        for i in range(0, len(self.val_items), self.tc.batch_size):
            items = self.val_items[i:i + self.tc.batch_size]
            ids = [self.tokenizer.caption_ids(it.caption, self.config.tokenizer.max_len) for it in items]
            batch = collate(ids, self.val_frames[i:i + len(items)], self.tokenizer.pad_id)
            with autocast(self.device):
                loss, _ = self.model(**{k: v.to(self.device) for k, v in batch.items()})
            total, count = total + float(loss) * len(items), count + len(items)
        self.model.train()
        return total / max(1, count)

    def _save(self) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        s = self.state
        ckpt = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "step": s.step, "rng": rng_state(),
                "data": {"epoch": s.epoch, "position": s.position}, "train_seconds": s.step_seconds,
                "config": self.config.model_dump(), "tokenizer": self.tokenizer.to_dict(),
                "vocab_size": self.tokenizer.vocab_size, "history": self.history}
        if self.config.lm.pretrained:
            ckpt["lm_config"] = self.model.lm.config.to_dict()
        return save_checkpoint(self.run_dir, ckpt, self.tc.keep_checkpoints)


def _truth(item: CaptionItem, vocabulary: Vocabulary | None) -> dict | None:
    """Attributes to score a caption against: the item's own, else parsed from its caption."""
    if item.attributes is not None:
        return item.attributes
    if vocabulary is None:
        return None
    parsed = parse_caption(item.caption, vocabulary)
    complete = parsed["objects"] and all(v is not None for o in parsed["objects"] for v in o.values())
    return parsed if complete and parsed["background"] and parsed["camera"] else None
