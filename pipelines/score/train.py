"""``vidcorpus train-clip``: gather captioned clips from the catalog and fit a CLIP on them.

The data side lives here (catalog query, frame decoding from the clip store); the model side
is ``captioner.clip_model.train_clip``. Each clip contributes a few decoded frames and every
caption it has (or only the chosen sources), and training draws a different frame and caption
of a clip each time it is sampled. Logs go to ROOT/runs/<run_id>/metrics.jsonl.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import numpy as np

from captioner.clip_model import TrainClipConfig, TrainClipResult, input_size, train_clip
from pipelines.score.frames import FrameConfig, FrameDecodeError, decode_clip_frames

log = logging.getLogger(__name__)


@dataclass
class ClipTrainingSet:
    clip_ids: list[str]
    frames: np.ndarray  # (N, F, S, S, 3) uint8
    texts: list[list[str]]  # captions of clip i
    skipped: int  # clips whose media did not decode


def load_training_set(catalog, size: int, where: str | None = None,
                      sources: list[str] | None = None, frames_per_clip: int = 8,
                      max_clips: int | None = None) -> ClipTrainingSet:
    """Captioned, non-rejected clips matching ``where``, decoded to ``frames_per_clip`` frames."""
    source_sql = ("AND cap.source IN (" + ", ".join("'" + s.replace("'", "''") + "'" for s in sources)
                  + ")") if sources else ""
    table = catalog.query(f"""
        SELECT c.clip_id, any_value(c.uri) AS uri, any_value(c.n_frames) AS n_frames,
               list(DISTINCT cap.text ORDER BY cap.text) AS texts
        FROM clips_v c JOIN captions cap ON cap.clip_id = c.clip_id
        WHERE NOT c.rejected AND cap.text IS NOT NULL AND length(cap.text) > 0 {source_sql}
          AND c.clip_id IN (SELECT clip_id FROM clips_v WHERE ({where or 'TRUE'}))
        GROUP BY c.clip_id ORDER BY c.clip_id {f'LIMIT {int(max_clips)}' if max_clips else ''}""")
    config = FrameConfig(n_frames=frames_per_clip, size=size)
    ids, frames, texts, skipped = [], [], [], 0
    for row in table.to_pylist():
        try:
            decoded = decode_clip_frames(catalog.root.uri(row["uri"]), config, row["n_frames"])
        except FrameDecodeError as e:
            log.warning("train-clip: skipping %s: %s", row["clip_id"], e)
            skipped += 1
            continue
        ids.append(row["clip_id"])
        frames.append(decoded.rgb)
        texts.append(row["texts"])
    empty = np.zeros((0, frames_per_clip, size, size, 3), np.uint8)
    return ClipTrainingSet(ids, np.stack(frames) if frames else empty, texts, skipped)


def run_train_clip(root_url: str, out: str, config: TrainClipConfig = TrainClipConfig(), *,
                   where: str | None = None, sources: list[str] | None = None,
                   frames_per_clip: int = 8, max_clips: int | None = None) -> TrainClipResult:
    """Fit (or fine-tune) ``config.model`` on the catalog's captioned clips; checkpoint to ``out``."""
    from storage import Catalog, CorpusRoot, SQLError
    catalog = Catalog(CorpusRoot.open(root_url))
    try:
        size = config.view_source or input_size(config.model)  # frames as large as the views need
        data = load_training_set(catalog, size, where, sources, frames_per_clip, max_clips)
    except SQLError as e:
        raise ValueError(f"--where cannot run: {e}") from None
    if len(data.clip_ids) < 2:
        raise ValueError(f"train-clip needs at least 2 captioned clips, found {len(data.clip_ids)} "
                         f"(where: {where or 'all'}; sources: {sources or 'all'})")
    run_id = f"train-clip-{time.strftime('%Y%m%d-%H%M%S')}"
    log.info("train-clip: %d clips (%d skipped), %d captions; run %s", len(data.clip_ids),
             data.skipped, sum(map(len, data.texts)), run_id)
    result = train_clip(data.frames, data.texts, config, out, clip_ids=data.clip_ids)
    lines = "".join(json.dumps(m) + "\n" for m in result.metrics)
    catalog.root.put_bytes(f"runs/{run_id}/metrics.jsonl", lines.encode())
    return result
