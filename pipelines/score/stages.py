"""The scoring stages: decode frames once → pixel statistics → CLIP scores (an actor pool).

Rows carry a clip (``clip_id``, ``uri`` relative to the root, ``n_frames``) and the captions it
already has (``alt_text``, ``original_text``). ``DecodeFramesStage`` adds the frames as plain
columns (see ``frames.ClipFrames.to_row``); ``FrameStatsStage`` and ``ClipScoreStage`` read
them; the CLIP stage clears them, so only scores and the embedding travel back to the driver.
Stage outputs: ``stats_json`` ({motion, luma, black, frozen}), ``signature`` (the pixel
signature, list of float32), ``clip_json`` ({clip_text, clip_text_original, neg_<slug>...}) and
``embedding`` (list of float32).
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from captioner.caption_contrast import contrast_scores
from captioner.clip_scorer import ClipScorerConfig
from pipelines.score.frames import (
    FRAME_COLUMNS, ClipFrames, FrameConfig, FrameDecodeError, StatsConfig, decode_clip_frames,
    frame_stats, pixel_signature,
)
from pipelines.stages.base import DROP, DROPPED_AT, ERROR, Drop, Resources, Stage

log = logging.getLogger(__name__)

DEFAULT_NEGATIVE_PROMPTS = ("a black screen", "static noise", "a blurry frame")
REFERENCE_PROMPT = "a video frame"  # stands in for the caption of a clip that has none


class DecodeFramesStage(Stage):
    """Decode each clip once: K RGB frames for CLIP plus small frames for pixel statistics."""

    name = "frames"
    resources = Resources(num_cpus=1, batch_size=8)

    def __init__(self, root_url: str, frames: FrameConfig, storage_options: dict | None = None):
        self.root_url, self.frames, self.storage_options = root_url, frames, storage_options

    def setup(self) -> None:
        from storage import CorpusRoot
        self.root = CorpusRoot.open(self.root_url, storage_options=self.storage_options)

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        from pipelines.ingest.stages import localize
        path = self.root.uri(row["uri"])
        try:
            decoded = decode_clip_frames(localize(path, self.storage_options), self.frames,
                                         row.get("n_frames"))
        except (FrameDecodeError, FileNotFoundError) as e:
            raise Drop("decode_error", f"{row['uri']}: {e}") from None
        return decoded.to_row()


class FrameStatsStage(Stage):
    """Motion, luminance, black and frozen scores and the pixel signature (cheap, CPU)."""

    name = "stats"
    resources = Resources(num_cpus=0.5, batch_size=32)

    def __init__(self, config: StatsConfig = StatsConfig()):
        self.config = config

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        frames = ClipFrames.from_row(row)
        return {"stats_json": json.dumps(frame_stats(frames, self.config)),
                "signature": pixel_signature(frames).tolist()}


def prompt_slug(prompt: str) -> str:
    """Score name of a negative prompt: ``"a black screen"`` → ``neg_black_screen``."""
    words = re.sub(r"[^a-z0-9]+", " ", prompt.lower()).split()
    words = words[1:] if words and words[0] in ("a", "an", "the") and len(words) > 1 else words
    if not words:
        raise ValueError(f"negative prompt {prompt!r} has no letters or digits to name it by")
    return "neg_" + "_".join(words)


@dataclass(frozen=True)
class ClipScoreConfig:
    """What the CLIP stage computes: the model, the negative prompts and the pool size."""

    negative_prompts: tuple[str, ...] = DEFAULT_NEGATIVE_PROMPTS
    reference_prompt: str = REFERENCE_PROMPT
    actors: int = 1
    clips_per_batch: int = 16

    def __post_init__(self) -> None:
        slugs = [prompt_slug(p) for p in self.negative_prompts]
        if len(set(slugs)) != len(slugs):
            raise ValueError(f"negative prompts must have distinct names, got {slugs}")


class ClipScoreStage(Stage):
    """CLIP scores of a batch of clips at once (a model stage: an actor pool on Ray).

    - ``embedding``: normalised mean of the K frame embeddings;
    - ``clip_text`` / ``clip_text_original``: cosine with the alt text / original description;
    - ``clip_text_contrast``: how much the clip prefers its alt text over the alt text with one
      word swapped (``captioner.caption_contrast``; 0 = no preference, < 0 = a variant fits
      better), each text judged by the clip's object it fits best (object views; whole-frame
      models have one "object"), for models whose checkpoint records the swap vocabulary
      (``train-clip``);
    - ``neg_<slug>``: zero-shot defect probability. For each negative prompt, CLIP's own
      zero-shot classifier over two classes — the negative prompt vs the clip's caption (alt
      text, else original, else ``reference_prompt``) — with the model's learned temperature:
      ``sigmoid(logit_scale * (cos(v, negative) - cos(v, caption)))``. It reads "how much more
      does the clip look like a black screen than like what it claims to show", in 0..1.
    """

    name = "clip"

    def __init__(self, scorer: ClipScorerConfig, config: ClipScoreConfig = ClipScoreConfig()):
        self.scorer_config, self.config = scorer, config
        self.resources = Resources(num_cpus=1, num_gpus=1.0 if scorer.device != "cpu" else 0.0,
                                   batch_size=config.clips_per_batch, actors=config.actors)

    def setup(self) -> None:
        from captioner.clip_scorer import ClipScorer
        self.scorer = ClipScorer(self.scorer_config).load()
        self.slugs = [prompt_slug(p) for p in self.config.negative_prompts]
        self.negatives = self.scorer.encode_texts(list(self.config.negative_prompts))  # (P, D)

    def __call__(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Batched over clips: one forward for all frames of the live rows, per-row timing shared."""
        if not getattr(self, "_ready", False):
            self.setup()
            self._ready = True
        live = [i for i, row in enumerate(batch) if not row.get(DROP)]
        out = [{**row, **dict.fromkeys(FRAME_COLUMNS)} for row in batch]  # frames stop here
        if not live:
            return out
        t0 = time.perf_counter()
        try:
            scores = self.score_rows([batch[i] for i in live])
        except Exception as e:  # a failing batch is recorded per row, never a crashed job
            log.warning("clip scoring failed on a batch of %d: %s: %s", len(live), type(e).__name__, e)
            scores = [{DROP: "clip_error", DROPPED_AT: self.name, ERROR: f"{type(e).__name__}: {e}"}] * len(live)
        per_row = (time.perf_counter() - t0) / len(live)
        for i, columns in zip(live, scores):
            out[i].update(columns, **{f"_t_{self.name}": per_row})
        return out

    def score_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Scores and embedding columns for each (live) row."""
        frames = np.stack([ClipFrames.from_row(r).rgb for r in rows])  # (B, K, S, S, 3)
        video, objects = self.scorer.video_embeddings(frames, objects=True)  # (B, D), (B, O, D)
        captions = self._caption_scores(rows, frames, video, objects)
        reference = [r.get("alt_text") or r.get("original_text") or self.config.reference_prompt
                     for r in rows]
        ref_cos = np.sum(video * self.scorer.encode_texts(reference), axis=1)  # (B,)
        neg_cos = video @ self.negatives.T  # (B, P)
        neg_prob = 1.0 / (1.0 + np.exp(-self.scorer.logit_scale * (neg_cos - ref_cos[:, None])))
        out = []
        for b in range(len(rows)):
            scores = dict(captions[b])
            scores.update({slug: float(neg_prob[b, p]) for p, slug in enumerate(self.slugs)})
            # None stays (a NULL score): clips_v gets every column the default rules name, and a
            # rescore without the caption clears an old value
            out.append({"clip_json": json.dumps(scores),
                        "embedding": video[b].astype(np.float32).tolist()})
        return out

    def _caption_scores(self, rows: list[dict[str, Any]], frames: np.ndarray, video: np.ndarray,
                        objects: np.ndarray) -> list[dict[str, float | None]]:
        """clip_text, clip_text_original and clip_text_contrast of each row, each judged by
        the models ``ClipScorer.judges`` names for the clip (a cross-fitted checkpoint: the
        model that did not train on it), averaged over them; None without the caption. The
        cosines use the clip's embedding; the contrast its objects' (an alt text names one)."""
        names = ("clip_text", "clip_text_original", "clip_text_contrast")
        judges = [self.scorer.judges(r.get("clip_id")) for r in rows]
        values: list[dict[str, list[float]]] = [{} for _ in rows]
        for model in self.scorer.folds:
            idx = [i for i, js in enumerate(judges) if any(j is model for j in js)]
            if not idx:
                continue
            v, o = (video[idx], objects[idx]) if model is self.scorer else \
                model.video_embeddings(frames[idx], objects=True)  # (n, D), (n, O, D)
            alt = [rows[i].get("alt_text") for i in idx]
            columns = [_caption_cosines(model, v, alt),
                       _caption_cosines(model, v, [rows[i].get("original_text") for i in idx]),
                       contrast_scores(o, alt, model.encode_texts, model.logit_scale, model.rivals)
                       if model.rivals else [None] * len(idx)]
            for name, column in zip(names, columns):
                for i, value in zip(idx, column):
                    if value is not None:
                        values[i].setdefault(name, []).append(value)
        return [{n: float(np.mean(v[n])) if n in v else None for n in names} for v in values]


def _caption_cosines(scorer, video: np.ndarray, texts: list[str | None]) -> list[float | None]:
    """Cosine of each clip with its text under ``scorer``, None where the clip has no such caption."""
    have = [i for i, t in enumerate(texts) if t]
    result: list[float | None] = [None] * len(texts)
    if have:
        emb = scorer.encode_texts([texts[i] for i in have])  # (n, D)
        for j, i in enumerate(have):
            result[i] = float(video[i] @ emb[j])
    return result
