"""``vidcorpus train-captioner``: resolve clips + reference captions from the catalog, then train.

Clips come from the catalog (``--where`` over ``clips_v`` joined with the reference captions of
``--caption-source``, default ``original``) or from a dataset's shards (``--dataset``: each
sample's mp4 is written once under the run directory, its caption taken from
``captions.json`` by source, else ``txt``). A deterministic hash of ``clip_id`` holds out
``--val-fraction`` of them. The library call is ``captioner.captioner_train.train_captioner``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from captioner.captioner_data import CaptionItem


class TrainJobConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    root: str
    dataset: Optional[str] = None
    where: Optional[str] = None
    config: str = "tiny"
    out: Optional[str] = None  # default ROOT/models/captioner-<config name>
    max_minutes: Optional[float] = None
    max_steps: Optional[int] = Field(None, ge=1)
    caption_source: str = "original"
    val_fraction: float = Field(0.1, ge=0.0, le=0.5)
    clip_model: Optional[str] = None
    clip_pretrained: Optional[str] = None
    lm_pretrained: Optional[str] = None
    reverse_augment: bool = False
    resume: bool = True

    @model_validator(mode="after")
    def _source(self):
        if self.dataset and self.where:
            raise ValueError("pass --dataset or --where, not both")
        return self

    def overrides(self) -> dict:
        """Config overrides the options ask for."""
        from pipelines.cli_caption import REVERSE_SWAPS
        train = {k: v for k, v in (("max_minutes", self.max_minutes), ("max_steps", self.max_steps))
                 if v is not None}
        if self.reverse_augment:
            train["reverse_swaps"] = REVERSE_SWAPS
        out: dict = {"train": train} if train else {}
        if self.clip_model:
            out["vision"] = {"model": self.clip_model, "pretrained": self.clip_pretrained}
        if self.lm_pretrained:
            out["lm"] = {"pretrained": self.lm_pretrained, "config": None}
        return out


def catalog_items(catalog, where: str | None, source: str) -> list[CaptionItem]:
    """Clips with a ``source`` caption, optionally filtered by ``where`` (over ``clips_v``)."""
    cond = f"({where})" if where else "TRUE"
    src = source.replace("'", "''")
    rows = catalog.query(
        f"WITH c AS (SELECT clip_id, uri FROM clips_v WHERE {cond}) "
        f"SELECT c.clip_id, c.uri, cap.text FROM c JOIN captions cap USING (clip_id) "
        f"WHERE cap.source = '{src}' AND cap.text IS NOT NULL ORDER BY c.clip_id").to_pylist()
    # clips.uri is relative to the corpus root
    return [CaptionItem(catalog.root.join(r["uri"]), r["text"], clip_id=r["clip_id"]) for r in rows]


def shard_items(root, dataset: str, source: str, media_dir: Path) -> list[CaptionItem]:
    """Samples of a dataset's shards; their mp4 members written to ``media_dir`` once."""
    from storage.shard_reader import read_shards

    media_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for sample in read_shards(root.join("shards", dataset)):
        path = media_dir / f"{sample['__key__']}.mp4"
        if not path.exists():
            path.write_bytes(sample["mp4"])
        by_source = {c.get("source"): c.get("text") for c in sample.get("captions.json") or []}
        items.append(CaptionItem(str(path), by_source.get(source) or sample["txt"],
                                 clip_id=sample["__key__"]))
    return items


def split_items(items: list[CaptionItem], val_fraction: float) -> tuple[list, list]:
    """(train, val) by a hash of clip_id; at least one val clip when there are two or more."""
    def bucket(it: CaptionItem) -> float:
        digest = hashlib.sha1((it.clip_id or it.path).encode()).hexdigest()
        return int(digest[:8], 16) / 0xFFFFFFFF

    val = [it for it in items if bucket(it) < val_fraction]
    if not val and len(items) >= 2 and val_fraction > 0:
        val = [min(items, key=bucket)]
    train = [it for it in items if it not in val]
    return train, val


def run_train_job(job: TrainJobConfig):
    """Resolve the items, split them, train (or resume); returns the ``TrainResult``."""
    from captioner.captioner_train import train_captioner
    from captioner.registry import load_config
    from pipelines.cli_caption import synth_vocabulary
    from storage import Catalog, CorpusRoot

    root = CorpusRoot.open(job.root)
    config = load_config(job.config, **job.overrides())
    out = Path(job.out or root.join("models", f"captioner-{config.name}"))
    if job.dataset:
        items = shard_items(root, job.dataset, job.caption_source, out / "shard_media")
    else:
        items = catalog_items(Catalog(root), job.where, job.caption_source)
    train, val = split_items(items, job.val_fraction)
    if not train or not val:
        raise ValueError(f"{len(items)} clips with '{job.caption_source}' captions matched; need "
                         "at least 2 (one to train on, one held out)")
    return train_captioner(train, val, config, out, vocabulary=synth_vocabulary(),
                           resume=job.resume)
