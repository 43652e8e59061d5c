"""CLIP models for scoring: the tiny open_clip config registry and ``train_clip``.

Named configs live beside the code as ``captioner/configs/vidcorpus-clip-*.json`` and are
registered with ``open_clip.add_model_config`` by :func:`register_configs`, after which any
open_clip entry point builds them by name::

    register_configs()
    model, _, preprocess = open_clip.create_model_and_transforms(
        "vidcorpus-clip-tiny", pretrained="models/clip/tiny.pt")

:func:`train_clip` fits a model from scratch, or fine-tunes one loaded from local weights, with
a CLIP contrastive loss on frames the caller decoded (a few per clip: each step picks a
different frame and caption of each clip, then jitters the frame: :func:`augment`). Equal
captions in a batch count as positives of each other (:func:`contrastive_loss`). (Batches drawn
from clips over one backdrop colour were tried and gave no gain: benchmarks/RESULTS.md, "Filter
quality".) The learning rate anneals
over steps or the time budget, whichever runs out first (:func:`lr_factor`). The checkpoint is
a plain dict whose ``state_dict`` open_clip loads directly.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from captioner.caption_contrast import build_rivals, words_of

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
TINY = "vidcorpus-clip-tiny"


def register_configs() -> list[str]:
    """Register every ``vidcorpus-clip-*.json`` with open_clip (idempotent); returns the names."""
    import open_clip
    files = sorted(CONFIG_DIR.glob("vidcorpus-clip-*.json"))
    known = set(open_clip.list_models())
    for path in files:
        if path.stem not in known:
            open_clip.add_model_config(path)
    return [p.stem for p in files]


def check_local_weights(pretrained: str | None) -> None:
    """Weights always come from a local file or directory: refuse tags that would download."""
    if pretrained is not None and not os.path.exists(pretrained):
        raise ValueError(f"--clip-pretrained {pretrained!r} is not a local file or directory "
                         "(weights are never downloaded: pass the path of a checkpoint)")


def create_clip(name: str, pretrained: str | None = None, device: str = "cpu"):
    """An open_clip model and its tokenizer; random init when ``pretrained`` is None.

    The random init is seeded (seed 0, the global RNG untouched), so every worker of a job —
    and every job — gets the same random model: ``@random-init`` scores are reproducible.
    """
    import open_clip
    import torch
    register_configs()
    check_local_weights(pretrained)
    if name not in open_clip.list_models():
        raise ValueError(f"unknown CLIP model {name!r}; known: {', '.join(open_clip.list_models())}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            model = open_clip.create_model(name, pretrained=pretrained, device=device)
        except RuntimeError as e:  # strict load_state_dict: another architecture's weights
            if "state_dict" not in str(e):
                raise
            raise ValueError(f"{pretrained} does not fit the architecture of {name} "
                             f"({str(e).strip().splitlines()[0]}); a checkpoint trained before the "
                             "config changed must be retrained with train-clip") from None
    return model, open_clip.get_tokenizer(name)


def input_size(name: str) -> int:
    """Side of model ``name``'s square input, read from its config (no weights are loaded)."""
    import open_clip
    register_configs()
    config = open_clip.get_model_config(name)
    if config is None:
        raise ValueError(f"unknown CLIP model {name!r}; known: {', '.join(open_clip.list_models())}")
    size = config["vision_cfg"].get("image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def image_size(model) -> int:
    """Side of the square input of ``model``'s vision tower."""
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


VIEWS = ("frame", "crops", "objects", "silhouettes")
CROSS_FIT_MIN_CLIPS = 400  # train-clip cross-fits two folds from this many clips on (folds=None)
SCRATCH_VIEWS = ("objects", "silhouettes")  # train-clip's default from scratch (recipe_defaults)
VIEW_OBJECTS = 2  # object crops per frame (an X–Y cut of the salient pixels; see object_crops)


def check_views(views) -> tuple[str, ...]:
    """``views`` as a tuple of known, distinct view names in VIEWS order (the order
    :func:`view_images` stacks them in), or a ValueError naming the choices."""
    views = tuple(views)
    bad = [v for v in views if v not in VIEWS]
    if not views or bad or len(set(views)) != len(views):
        raise ValueError(f"CLIP views must be distinct names out of {', '.join(VIEWS)}; got {list(views)}")
    return tuple(v for v in VIEWS if v in views)


def recipe_defaults(model: str, pretrained: str | None, views=None, view_source: int | None = None,
                    folds: int | None = None) -> dict:
    """The view recipe ``train-clip`` uses unless told otherwise (TrainClipConfig fields).

    From scratch: the objects cut out of their crops and their silhouettes (``SCRATCH_VIEWS``;
    the whole frame added nothing but cost, and crops with their background made colour words
    ambiguous), from frames decoded at 128 px or twice the tower's input (crops of
    small objects need the pixels), with a contrastive loss per view kind beside the one of
    their mean (so the colour-free silhouettes must match the text by shape alone),
    word positives (a short caption is a positive of every clip whose captions hold its key
    words) and cross-fitting (``folds=None``: two folds from ``CROSS_FIT_MIN_CLIPS`` clips on, a
    model trained on a clip's caption cannot tell the caption is wrong). Fine-tuning
    pretrained weights: whole frames at the input size, which is what such weights know, one
    model. Each choice is measured in benchmarks/RESULTS.md, "Filter quality".
    """
    views = check_views(views) if views else (SCRATCH_VIEWS if pretrained is None else ("frame",))
    objects = views != ("frame",)
    source = view_source or (max(128, 2 * input_size(model)) if objects else None)
    return {"views": views, "view_source": source, "word_positives": pretrained is None,
            "view_loss": 1.0 if pretrained is None and len(views) > 1 else 0.0,
            "folds": folds or (None if pretrained is None else 1)}


def view_images(images, views: tuple[str, ...], size: int | None = None):
    """What the image tower sees of each frame: (N, 3, H, H) in 0..1 → (N, M, 3, S, S), and
    the view kind of each of the M images (list of M indices into ``views``).

    S = ``size`` (the tower's input; None: H). Frames decoded larger than the tower's input
    (``view_source``) give the crops more pixels: a 6-pixel object of a 64-pixel frame is a
    blob, of a 128-pixel frame a shape.

    - ``frame``: the whole frame (one image, area-resized to S);
    - ``crops``: a square crop around each object that stands out from the frame's median
      colour (``VIEW_OBJECTS`` crops: the salient pixels cut in two at the widest empty band,
      left / top first; ``captioner.captioner_model.object_crops``), in colour;
    - ``objects``: the same crops with everything but the object blacked out (times its
      silhouette). In a plain crop the background fills most of the image, so "blue" could
      mean a blue object or a blue backdrop; the synthetic world's wrong alt texts often name
      the background's colour as the object's. Cut out, colour words can only bind to the
      object (zero-shot object colour 0.37–0.45 → 0.56–0.59, benchmarks/RESULTS.md, "Filter
      quality");
    - ``silhouettes``: the same crops without colour: how far each pixel is from the frame's
      median colour, ramped to 0..1, in all three channels. A tower that sees colour fits
      colour words first and shape words hardly at all (benchmarks/RESULTS.md, "Captioner
      quality"); without colour it can only fit the words by the outline.

    A frame's embedding is the mean over its view kinds of each kind's mean image embedding
    (:func:`encode_views`).
    """
    import torch
    import torch.nn.functional as F
    from captioner.captioner_model import object_crops, silhouette_of
    size = size or images.shape[-1]
    parts = []
    if "frame" in views:
        whole = images if images.shape[-1] == size else F.interpolate(images, size=(size, size), mode="area")
        parts.append(whole[:, None])
    if any(v in views for v in ("crops", "objects", "silhouettes")):
        crops, _, colours = object_crops(images, (size, size), VIEW_OBJECTS)  # (N, O, 3, S, S)
        median = colours[:, -1][:, None, :, None, None]  # (N, 1, 3, 1, 1)
        outline = silhouette_of(crops - median)  # (N, O, 1, S, S)
        if "crops" in views:
            parts.append(crops)
        if "objects" in views:
            parts.append(crops * outline)
        if "silhouettes" in views:
            parts.append(outline.expand(-1, -1, 3, -1, -1))
    kinds = [k for k, p in enumerate(parts) for _ in range(p.shape[1])]
    return torch.cat(parts, dim=1), kinds


def encode_views(model, images, views: tuple[str, ...], per_kind: bool = False, objects: bool = False):
    """Per-frame embeddings of ``images`` (N, 3, H, H) in 0..1 (:func:`view_images`): each view
    kind's mean of normalised image embeddings, (N, len(views), D) with ``per_kind``, else their
    mean (N, D). Not normalised: the cosine of that mean with a text is the mean of the
    kinds' cosines, up to one factor per frame. ``objects``: also each object's own embedding
    (:func:`object_embeddings`), returned second."""
    x, kinds = view_images(images, views, image_size(model))  # (N, M, 3, S, S)
    return encode_view_images(model, x, kinds, len(views), per_kind, objects)


def encode_view_images(model, x, kinds: list[int], n_kinds: int, per_kind: bool = False,
                       objects: bool = False):
    """:func:`encode_views` on views already made: ``x`` (N, M, 3, S, S) in 0..1 from
    :func:`view_images`, ``kinds`` its view kind per image."""
    import torch
    n, m = x.shape[:2]
    mean = torch.tensor(model.visual.image_mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.image_std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    emb = model.encode_image((x.flatten(0, 1) - mean) / std, normalize=True).float()  # (N·M, D)
    emb = emb.unflatten(0, (n, m))  # (N, M, D)
    index = torch.tensor(kinds, device=emb.device)
    groups = [emb[:, index == k] for k in range(n_kinds)]  # per kind (N, m_k, D), m_k in {1, O}
    per = torch.stack([g.mean(1) for g in groups], dim=1)  # (N, V, D)
    pooled = per if per_kind else per.mean(1)
    return (pooled, object_embeddings(groups)) if objects else pooled


def object_embeddings(groups):
    """Each object's embedding (N, O, D), not normalised: the mean over view kinds of the
    kind's image of that object. ``groups``: per view kind its image embeddings (N, m_k, D) in
    :func:`view_images`' layout (an object kind has one image per object, left / top first; a
    whole-frame kind one image, which stands for every object). O = 1 for whole frames alone."""
    import torch
    o = max(g.shape[1] for g in groups)
    return torch.stack([g.expand(-1, o, -1) for g in groups]).mean(0)  # (N, O, D)


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainClipConfig:
    """How ``train_clip`` fits a model; ``pretrained`` set means fine-tuning."""

    model: str = TINY
    pretrained: str | None = None
    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3  # fine-tuning wants ~1e-5..5e-5
    weight_decay: float = 0.1
    warmup_steps: int = 40
    max_seconds: float | None = None  # stop early when the time budget is spent
    seed: int = 0
    log_every: int = 50
    threads: int | None = None  # torch intra-op threads; 1 is fastest on a busy small machine
    augment: bool = True  # zoom / shift / mirror / brightness jitter of every training frame
    views: tuple[str, ...] = ("frame",)  # what the tower sees of a frame: view_images
    word_positives: bool = False  # a text is a positive of every clip whose captions hold its key words
    view_source: int | None = None  # side of the decoded frames the views come from (None: input size)
    view_loss: float = 0.0  # weight of a contrastive loss per view kind, beside the one of their mean
    folds: int | None = 1  # cross-fitting: K models, each without one fold of the clips; None: auto (train_clip)

    def __post_init__(self) -> None:
        object.__setattr__(self, "views", check_views(self.views))
        check_local_weights(self.pretrained)
        if self.steps < 1 or self.batch_size < 2 or self.lr <= 0 or (self.folds is not None and self.folds < 1):
            raise ValueError(f"train-clip needs steps >= 1, batch_size >= 2, lr > 0 and folds >= 1; got {self}")


@dataclass
class TrainClipResult:
    """What a training run did; ``metrics`` holds the logged steps."""

    steps: int
    seconds: float
    final_loss: float
    metrics: list[dict[str, float]] = field(default_factory=list)


def train_clip(frames: np.ndarray, texts: list[list[str]], config: TrainClipConfig, out: str,
               on_log: Callable[[dict], None] | None = None,
               clip_ids: list[str] | None = None) -> TrainClipResult:
    """Fit ``config.model`` on clips: ``frames`` (N, F, S, S, 3) uint8, ``texts[i]`` = clip i's captions.

    Each step draws ``batch_size`` distinct clips, one random frame and one random caption
    each, and minimises :func:`contrastive_loss`. Writes the checkpoint to ``out``.

    With ``config.folds`` = K >= 2 it cross-fits: the clips fall into K folds by a hash of
    their id (``clip_ids``, needed then; :func:`fold_of`), and model k is trained on every
    fold but k, with 1/K of the steps and time budget. Model 0 is the checkpoint's model; the
    others and the fold of every training clip ride along (``cross_fit``), so the scorer can
    score each training clip with the one model that never saw it — a model scores the
    captions it was trained on as true, wrong ones included (benchmarks/RESULTS.md, "Filter
    quality"). ``folds=None`` picks 2 from ``CROSS_FIT_MIN_CLIPS`` clips on, else 1: on a
    smaller set, models trained on half of it score too noisily to judge captions by.
    """
    import torch
    if config.folds is None:
        config = replace(config, folds=2 if len(frames) >= CROSS_FIT_MIN_CLIPS else 1)
        log.info("train-clip: %d clips, %d fold(s)", len(frames), config.folds)
    assert frames.ndim == 5 and frames.shape[-1] == 3, f"frames must be (N, F, S, S, 3), got {frames.shape}"
    assert len(texts) == len(frames) and all(texts), "every clip needs at least one caption"
    if config.folds > 1 and (clip_ids is None or len(clip_ids) != len(frames)):
        raise ValueError(f"train-clip with {config.folds} folds needs the id of every clip")
    if config.threads:
        torch.set_num_threads(config.threads)
    model, tokenizer = create_clip(config.model, config.pretrained)
    size = config.view_source or image_size(model)
    assert frames.shape[2] == size, f"frames are {frames.shape[2]}px, train-clip wants {size}px"
    rivals = build_rivals(sorted({t for clip in texts for t in clip}), clips=texts)  # of all the captions
    t0 = time.perf_counter()
    views, kinds = precompute_views(frames, config.views, image_size(model))
    log.info("train-clip: %d views of %d frames made in %.1fs", views.shape[2], views.shape[0] * views.shape[1],
             time.perf_counter() - t0)
    parts, per_fold, fold = [np.arange(len(frames))], config, None
    if config.folds > 1:
        fold = np.array([fold_of(c, config.folds) for c in clip_ids])
        parts = [np.nonzero(fold != k)[0] for k in range(config.folds)]  # model k: all folds but k
        per_fold = replace(config, steps=max(1, config.steps // config.folds),
                           max_seconds=config.max_seconds / config.folds if config.max_seconds else None)
    models, results = [], []
    for k, keep in enumerate(parts):
        if len(keep) < 2:
            raise ValueError(f"cross-fitting with {config.folds} folds leaves fold {k} model "
                             f"{len(keep)} clips to train on; use fewer folds or more clips")
        if fold is not None:
            log.info("train-clip: fold %d of %d, %d clips", k + 1, config.folds, len(keep))
        torch.manual_seed(config.seed + k)
        model_k = model if k == 0 else create_clip(config.model, config.pretrained)[0]
        optimizer_k = _optimizer(model_k, config)
        fold_batches = _Batches([texts[i] for i in keep], tokenizer, config.seed + k, rivals)
        fold_log = (lambda m, k=k: on_log({**m, "fold": k})) if on_log and fold is not None else on_log
        fold_views = views if len(keep) == len(views) else views[torch.from_numpy(keep)]
        results.append(_fit(model_k, fold_views, kinds, fold_batches, optimizer_k, per_fold, fold_log))
        models.append((model_k, optimizer_k))
    if fold is None:
        save_checkpoint(out, model, models[0][1], config, results[0], rivals)
        return results[0]
    result = TrainClipResult(sum(r.steps for r in results), sum(r.seconds for r in results),
                             results[0].final_loss,
                             [{**m, "fold": k} for k, r in enumerate(results) for m in r.metrics])
    cross_fit = {"folds": config.folds, "state_dicts": [m.state_dict() for m, _ in models[1:]],
                 "fold_of": dict(zip(clip_ids, fold.tolist()))}
    save_checkpoint(out, model, models[0][1], config, result, rivals, cross_fit)
    return result


def fold_of(clip_id: str, folds: int) -> int:
    """The cross-fitting fold of a clip: a hash of its id, so the split does not follow the
    order clips were ingested in (the same for every run and machine)."""
    return int(hashlib.sha1(clip_id.encode()).hexdigest()[:8], 16) % folds


def precompute_views(frames: np.ndarray, views: tuple[str, ...], size: int, chunk: int = 256):
    """Every frame's views, made once before training (the object search is most of a tiny
    tower's step otherwise): ``frames`` (N, F, H, H, 3) uint8 → (N, F, M, 3, S, S) uint8 and
    the view kind of each of the M images (:func:`view_images`)."""
    import torch
    n, f = frames.shape[:2]
    flat = torch.from_numpy(np.ascontiguousarray(frames)).flatten(0, 1)  # (N·F, H, H, 3)
    out, kinds = [], []
    with torch.no_grad():
        for i in range(0, len(flat), chunk):
            x = flat[i:i + chunk].permute(0, 3, 1, 2).float().div_(255)
            made, kinds = view_images(x, views, size)  # (b, M, 3, S, S)
            out.append(made.mul_(255).round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out).unflatten(0, (n, f)), kinds


class _Batches:
    """Pre-tokenised captions and the order of clips (distinct clips within a batch).

    Captions that tokenise the same (``"Blue Background"``, ``"blue background"``) share one
    row, so the loss treats them as one text. ``rivals``: the swap vocabulary of all the
    training captions (``caption_contrast.build_rivals``; also a cross-fitting fold's), saved
    with the checkpoint; the words that have rivals are each caption's key words (:meth:`positives`).
    """

    def __init__(self, texts: list[list[str]], tokenizer, seed: int, rivals: dict[str, list[str]]):
        import torch
        unique = sorted({t for clip in texts for t in clip})
        where = {t: i for i, t in enumerate(unique)}
        self.tokens, row = torch.unique(tokenizer(unique), dim=0, return_inverse=True)  # (n_texts, L)
        self.choices = [row[[where[t] for t in clip]].numpy() for clip in texts]
        self.rivals = rivals
        text_of = dict(zip(row.tolist(), unique))  # a text of each token row
        self.keys = {r: frozenset(w for w in words_of(t) if w in self.rivals) for r, t in text_of.items()}
        self.clip_words = [frozenset(w for t in clip for w in words_of(t)) for clip in texts]
        self.rng = np.random.default_rng(seed)
        self.order: list[int] = []

    def draw(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(clip indices, caption rows) of the next batch: a random caption of each clip."""
        batch_size = min(batch_size, len(self.choices))
        if len(self.order) < batch_size:
            self.order = self.rng.permutation(len(self.choices)).tolist()
        clips = np.array(self.order[:batch_size])
        del self.order[:batch_size]
        texts = np.array([self.rng.choice(self.choices[i]) for i in clips])
        return clips, texts

    def positives(self, clips: np.ndarray, rows: np.ndarray):
        """(B, B) bool: caption row ``rows[j]`` is true of clip ``clips[i]`` by its key words —
        it has some and the clip's captions hold them all (``"star video"`` is true of a clip
        captioned ``"A large red star spins"``). Contrastive learning on a small vocabulary
        otherwise pushes every other star clip of the batch away from "star video"."""
        import torch
        keys = [self.keys[int(r)] for r in rows]
        return torch.tensor([[bool(k) and k <= self.clip_words[int(c)] for k in keys] for c in clips])


def encode_text_trimmed(model, tokens):
    """``model.encode_text(tokens, normalize=True)`` computed on the tokens up to the longest
    text's end (the causal mask makes the padding after a text's end token irrelevant to it),
    which is several times cheaper for short captions. Models that are not open_clip's plain
    ``CLIP`` (custom or HF text towers) get the full call."""
    import torch.nn.functional as F
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask")
    if not all(hasattr(model, a) for a in needed) or getattr(model, "text_pool_type", "argmax") != "argmax":
        return model.encode_text(tokens, normalize=True)
    from open_clip.transformer import text_global_pool
    length = int((tokens != 0).sum(1).max())
    t = tokens[:, :length]
    x = model.token_embedding(t) + model.positional_embedding[:length]
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:length, :length]))
    x = text_global_pool(x, t, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        x = model.text_projection(x) if hasattr(model.text_projection, "weight") else x @ model.text_projection
    return F.normalize(x, dim=-1)


def _optimizer(model, config: TrainClipConfig):
    """AdamW without decay on gains, biases and the temperature (schedule: :func:`lr_factor`).

    The fused CPU kernel matters here: the token embedding (49408 x width) is most of a tiny
    model's parameters, and the unfused update of it costs ~10x the fused one per step.
    """
    import torch
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    groups = [{"params": no_decay, "weight_decay": 0.0},
              {"params": decay, "weight_decay": config.weight_decay}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6, fused=True)


def lr_factor(step: int, elapsed: float, config: TrainClipConfig) -> float:
    """Linear warmup, then cosine decay to 0 over the run's progress: the larger of the share
    of ``steps`` done and the share of ``max_seconds`` spent, so a run cut by its time budget
    still ends annealed instead of at a high learning rate."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    if config.max_seconds:
        progress = max(progress, elapsed / config.max_seconds)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def augment(images, gen, max_zoom: float = 1.25, max_shift: float = 0.1, brightness: float = 0.1):
    """Geometric and brightness jitter of a batch (B, 3, S, S) in 0..1; hue is never touched.

    Each image is zoomed in by up to ``max_zoom`` (independently per axis, so the aspect ratio
    changes too, as it does between clips squashed to a square), shifted by up to ``max_shift``
    of its side, mirrored left-right half the time, and scaled in brightness by up to
    ``brightness``. Colour and shape words stay true under all of these.
    """
    import torch
    import torch.nn.functional as F
    b = images.shape[0]
    u = torch.rand(b, 6, generator=gen)
    zoom = 1.0 / (1.0 + (max_zoom - 1.0) * u[:, :2])  # (B, 2): share of each axis kept
    flip = torch.where(u[:, 2] < 0.5, -1.0, 1.0)  # (B,)
    shift = (2 * u[:, 3:5] - 1) * max_shift  # (B, 2)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = zoom[:, 0] * flip, zoom[:, 1]
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, S, S, 2)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gain = 1 + (2 * u[:, 5] - 1) * brightness  # (B,)
    return out.mul_(gain.view(b, 1, 1, 1)).clamp_(0, 1)


def contrastive_loss(image_features, text_features, logit_scale, text_ids, positives=None):
    """Symmetric InfoNCE where every pair with the same caption text counts as a positive.

    Small or templated caption vocabularies (``"red circle"`` on many clips) put the same text
    on several clips of a batch; open_clip's ``ClipLoss`` would push those clips apart from
    their own correct caption. Targets spread evenly over the equal captions instead.
    ``image_features``, ``text_features``: (B, D) normalised; ``text_ids``: (B,) caption ids.
    ``positives`` (B, B) bool, optional: which texts are true of which image beyond equal
    captions (:meth:`_Batches.positives`).
    """
    import torch.nn.functional as F
    logits = logit_scale * image_features @ text_features.T  # (B, B)
    same = text_ids[:, None] == text_ids[None, :]  # (B, B), symmetric
    if positives is not None:
        same = same | positives
    same = same.float()
    targets = same / same.sum(dim=1, keepdim=True)  # image → its true texts
    column_targets = (same / same.sum(dim=0, keepdim=True)).T  # text → the images it is true of
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, column_targets))


def _fit(model, views, kinds: list[int], batches: _Batches, optimizer, config: TrainClipConfig,
         on_log) -> TrainClipResult:
    """The loop: sample, augment, forward, contrastive loss, step; stops at ``steps`` or
    ``max_seconds``. ``views`` (N, F, M, 3, S, S) uint8: :func:`precompute_views`."""
    import torch
    import torch.nn.functional as F
    gen = torch.Generator().manual_seed(config.seed)
    model.train()
    t0, metrics, loss_value, step = time.perf_counter(), [], float("nan"), 0
    for step in range(1, config.steps + 1):
        lr = config.lr * lr_factor(step - 1, time.perf_counter() - t0, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        clips, texts = batches.draw(config.batch_size)
        which = torch.randint(views.shape[1], (len(clips),), generator=gen)  # a frame per clip
        images = views[torch.from_numpy(clips), which].float().div_(255)  # (B, M, 3, S, S)
        if config.augment:
            images = augment(images.flatten(0, 1), gen).unflatten(0, images.shape[:2])
        text_ids = torch.from_numpy(texts)  # (B,)
        per_kind = encode_view_images(model, images, kinds, len(config.views), per_kind=True)  # (B, V, D)
        text_features = encode_text_trimmed(model, batches.tokens[text_ids])  # (B, D)
        scale = model.logit_scale.exp()
        image_features = F.normalize(per_kind.mean(1), dim=-1)  # (B, D)
        positives = batches.positives(clips, texts) if config.word_positives else None
        loss = contrastive_loss(image_features, text_features, scale, text_ids, positives)
        if config.view_loss and len(config.views) > 1:  # each kind must match the text alone too
            each = [contrastive_loss(F.normalize(per_kind[:, v], dim=-1), text_features, scale, text_ids,
                                     positives) for v in range(len(config.views))]
            loss = loss + config.view_loss * torch.stack(each).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        loss_value, elapsed = float(loss.detach()), time.perf_counter() - t0
        if step % config.log_every == 0 or step == config.steps:
            metrics.append({"step": step, "loss": loss_value, "lr": lr,
                            "logit_scale": float(scale.detach()), "seconds": elapsed})
            log.info("train-clip step %d: loss %.4f (%.1fs)", step, loss_value, elapsed)
            if on_log:
                on_log(metrics[-1])
        if config.max_seconds is not None and elapsed >= config.max_seconds:
            log.info("train-clip: time budget %.0fs spent at step %d", config.max_seconds, step)
            break
    model.eval()
    return TrainClipResult(step, time.perf_counter() - t0, loss_value, metrics)


def save_checkpoint(out: str, model, optimizer, config: TrainClipConfig, result: TrainClipResult,
                    rivals: dict[str, list[str]], cross_fit: dict | None = None) -> None:
    """A plain dict (open_clip reads ``state_dict``), written to a tmp name and renamed.

    Beside the weights: the view recipe (``views``, ``view_source``), the swap vocabulary
    of the training captions (``rivals``) and, when cross-fitted, the other folds' models and
    the fold of each training clip (``cross_fit``), which the scorer reads back (``ClipRecipe``)."""
    import open_clip
    import torch
    checkpoint: dict[str, Any] = {
        "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
        "step": result.steps, "model_name": config.model,
        "model_config": open_clip.get_model_config(config.model),
        "train_config": asdict(config), "rng": torch.get_rng_state(),
        "metrics": result.metrics, "views": list(config.views),
        "view_source": config.view_source or image_size(model), "rivals": rivals, "cross_fit": cross_fit}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.tmp-{os.getpid()}"
    torch.save(checkpoint, tmp)
    os.replace(tmp, out)
