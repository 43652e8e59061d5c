"""The video captioner: open_clip vision tower → temporal resampler → projector → causal LM.

    frames (B, K, 3, H, W) uint8
      → vision tower per frame: all patch tokens          (B, K, P, Wv)   towers.FrameEncoder
      → learned queries over all K·P tokens, with time,
        position, contrast, colour and saliency cues       (B, Q, Wr)      resampler
      → projector (MLP)                                    (B, Q, D)       the visual prefix
      [+ whole tower's pooled embedding of each crop       (B, O·K, D)     vision.pooled_tokens]
      [+ box and camera trajectory of the clip             (B, 1, D)       resampler.track_token]
      [+ object and background colours of the clip         (B, 1, D)       resampler.colour_token]
      → LM on [prefix, bos, caption…, eos] through ``inputs_embeds``; loss on caption tokens only.

``vision.input`` picks what the tower sees: ``rgb`` (normalised pixels, what pretrained CLIP
towers expect), ``rgb_silhouette`` (6 channels: those pixels plus |frame − its median colour|),
``silhouette_motion`` (2 colour- and texture-free channels: where the frame differs from its
median colour by more than a faint texture does, and that mask's change to the next frame), or
``rgb_silhouette_motion`` (5: the normalised pixels and those two).
Colour also reaches the resampler through its own pixel-statistics path. (Measured on the
synthetic world: a tiny tower that sees colour memorises clips by it instead of learning
shapes; without colour it learns shapes from a direct label, but inside the captioner colour
and background words were then learned far more slowly than with RGB in the tower.)

``vision.object_crops`` S > 0 makes the model take frames of S × S pixels (S above the tower's
input side) and show the tower more views of each: the whole frame scaled down to the tower's
input, and a square crop around the pixels that stand out from the frame's median colour (the
objects, with a margin), scaled to the same input: object-centric views, so a small object's
shape and colour fill the tower's input instead of a few pixels. ``vision.max_objects`` 2 cuts
the salient pixels in two at the widest empty band of columns or rows between them (an X–Y cut)
and crops each part: one crop per object, left (or top) first, the order captions name them in.
The resampler sees the (1 + O)·K views (a learned view embedding tells them apart) plus, per
frame, each crop's box (centre, side, share of salient pixels) and its change to the next frame:
where the objects are, how big they are and how they move.
(Measured on the synthetic world: a 2-layer ViT probe learns shape to 72 % from 32-pixel crops
in 600 steps, 29 % from whole 64-pixel frames.)

``vision.crop_colour`` false shows the crops to the tower without their RGB channels (silhouette
and motion only; colour still reaches the resampler through the crops' pixel statistics). A
tower that sees colour fits the captions by colour and never learns shape; a colour-free one
cannot. (Measured: a linear probe on the pooled crop embedding after 300 steps of the word
loss below decodes shape at 92 % on held-out single-object shots colour-free, at 48 % with RGB
after 600 steps.)

``vision.pooled_tokens`` runs the whole tower (not just up to its token layer) on each crop and
gives the LM its pooled embedding as one more prefix token per crop per frame: a short path
from the tower to the words, where the resampler's queries average patch tokens.
``vision.word_head`` w > 0 adds w × an auxiliary loss while training: which caption tokens
occur, predicted from the mean pooled crop embedding (binary cross-entropy): the tower gets a
direct signal for every content word instead of only through the LM.

``resampler.crop_tokens`` false keeps the crops' patch tokens out of the resampler (its queries
see the whole frames only; the crops reach the LM through their pooled tokens), and
``resampler.colour_token`` adds a prefix token from an MLP over each crop's mean salient colour
and the frame's median colour, all K frames: measured colours, as the track token's boxes are.
(Measured: with colour-free crop tokens among the resampler's keys, colour, background and
camera words were barely learned in the 10-minute budget; out of it, with the colour token,
they were.)

``resampler.track_token`` gives the LM one more prefix token: an MLP over the whole clip's crop
boxes, their changes and the camera-shift curves below, all K frames at once. Object motion
(relative to the camera) is a function of these few numbers, which the resampler's averaging
over patch tokens loses. (Measured: a linear probe on these features reads single-object motion
at 92 % on held-out shots, on the prefix of the captioner trained without the token at 21 %.)

``resampler.camera_shift`` S > 0 adds, per frame, the correlation of the background's row and
column profiles (medians, so objects barely count) with the next frame's at shifts −S…S: how
the camera moved, which object motion is relative to. It is a fixed, non-learned measurement,
as optical flow is for two-stream video models.

The LM is any ``transformers`` ``AutoModelForCausalLM``: built from a config dict (tiny GPT-2)
or loaded from a local directory. Greedy generation is a small batched loop with the LM's KV
cache; every clip has the same prefix length, so a batch needs no left padding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from captioner.registry import CaptionerConfig
from captioner.resampler import ObjectTokens, TemporalResampler, frame_median, mlp, pixel_statistics
from captioner.towers import FrameEncoder, build_lm

IGNORE = -100  # label of positions without loss (visual prefix, bos, padding)
SILHOUETTE_GAIN = 4.0  # |frame − median| is mostly small; scale it towards unit range
SILHOUETTE_FLOOR, SILHOUETTE_RISE = 0.2, 0.2  # Σ|frame − median| over RGB: texture < 0.15 < objects


# ------------------------------------------------------------------------- captioner


class VideoCaptioner(nn.Module):
    """Frames in, caption logits / greedy captions out. See the module docstring for the flow."""

    def __init__(self, config: CaptionerConfig, vocab_size: int, load_weights: bool = True,
                 lm_config: dict | None = None):
        super().__init__()
        self.config, self.vocab_size = config, vocab_size
        self.frame_encoder = FrameEncoder(config.vision, load_weights)
        self.frame_encoder.requires_grad_(config.vision.trainable)
        self.tower_size = self.frame_encoder.image_size
        crop, n_obj = config.vision.object_crops, config.vision.max_objects
        self.image_size = (crop, crop) if crop else self.tower_size  # the frames the model takes
        r = config.resampler
        self.resampler = TemporalResampler(self.frame_encoder.width, r.width, r.queries, r.layers,
                                           r.heads, r.max_frames, self.frame_encoder.grid,
                                           r.saliency_init, camera_curve_width(r.camera_shift),
                                           views=1 + n_obj if crop and r.crop_tokens else 1,
                                           box_dim=box_features(n_obj) if crop else 0)
        if not r.crop_tokens and not (crop and config.vision.pooled_tokens):
            raise ValueError("resampler.crop_tokens false needs vision.object_crops > 0 and "
                             "vision.pooled_tokens true (the crops' only way to the LM)")
        self.lm = build_lm(config.lm, vocab_size, load_weights, lm_config)
        self.lm.requires_grad_(config.lm.trainable)
        d = self.lm.get_input_embeddings().embedding_dim
        self.projector = mlp(r.width, d, d)
        self.pooled_proj = self.word_head = None  # pooled crop embedding of each frame → a token
        if config.vision.pooled_tokens:
            e = self.frame_encoder.pooled_width
            self.pooled_proj = nn.Sequential(nn.LayerNorm(e), *mlp(e, d, d))
            self.pooled_embed = nn.Parameter(0.02 * torch.randn(self._pooled_count(), d))
            if config.vision.word_head:
                self.word_head = nn.Linear(e, vocab_size)
        self.track_mlp = None  # the clip's boxes and camera curves (all K frames) → one token
        if r.track_token:
            per_frame = (box_features(n_obj) if crop else 0) + camera_curve_width(r.camera_shift)
            if not per_frame:
                raise ValueError("resampler.track_token needs vision.object_crops > 0 or "
                                 "resampler.camera_shift > 0 (its inputs)")
            self.track_mlp = mlp(config.vision.frames * per_frame, 2 * d, d)
        self.object_tokens = None  # one token per object crop (all it measured), one for the scene
        if r.object_tokens:
            if not (crop and config.vision.pooled_tokens):
                raise ValueError("resampler.object_tokens needs vision.object_crops > 0 and "
                                 "vision.pooled_tokens true (the objects' crops and embeddings)")
            if r.track_token or r.colour_token:
                raise ValueError("resampler.object_tokens replaces track_token and colour_token: "
                                 "set both false")
            self.object_tokens = ObjectTokens(config.vision.frames, n_obj, BOX_FEATURES,
                                              self.frame_encoder.pooled_width,
                                              camera_curve_width(r.camera_shift), d)
        self.colour_token_mlp = None  # the clip's object and background colours (all K frames) → one token
        if r.colour_token:
            if not crop:
                raise ValueError("resampler.colour_token needs vision.object_crops > 0 (it reads "
                                 "the colours of the object crops)")
            self.colour_token_mlp = mlp(config.vision.frames * 3 * (n_obj + 1), 2 * d, d)
        mean, std = self.frame_encoder.mean, self.frame_encoder.std
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def n_frames(self) -> int:
        return self.config.vision.frames

    @property
    def prefix_len(self) -> int:
        """Tokens of the visual prefix: the resampler's queries, [one per object crop (or frame)
        per frame: ``vision.pooled_tokens``], [one: ``resampler.track_token``], [one:
        ``resampler.colour_token``], [one per object crop and one for the scene:
        ``resampler.object_tokens``]."""
        n_obj = self.config.vision.max_objects
        return (self.config.resampler.queries + self._pooled_count() * (self.pooled_proj is not None)
                + (self.track_mlp is not None) + (self.colour_token_mlp is not None)
                + (n_obj + 1) * (self.object_tokens is not None))

    def _pooled_count(self) -> int:
        """Pooled tokens with ``vision.pooled_tokens``: one per object crop (or frame) per frame."""
        v = self.config.vision
        return (v.max_objects if v.object_crops else 1) * v.frames

    def tower_input(self, pixels: torch.Tensor, median: torch.Tensor, k: int,
                    colour: bool = True) -> torch.Tensor:
        """What the tower sees: (N, 3, H, W) in [0, 1] for N = B·K frames, medians (N, 3)
        → (N, C, H, W), C = 3, 6, 2 or 5 (``vision.input``; see the module docstring).
        ``colour`` False zeroes the RGB channels (``vision.crop_colour``)."""
        kind = self.config.vision.input
        deviation = pixels - median[..., None, None]  # (N, 3, H, W)
        if kind == "silhouette_motion":
            return motion_channels(deviation, k)  # (N, 2, H, W)
        rgb = (pixels - self.pixel_mean) / self.pixel_std  # (N, 3, H, W)
        if not colour:
            rgb = torch.zeros_like(rgb)
        if kind == "rgb":
            return rgb
        if kind == "rgb_silhouette_motion":
            return torch.cat([rgb, motion_channels(deviation, k)], dim=1)  # (N, 5, H, W)
        return torch.cat([rgb, deviation.abs() * SILHOUETTE_GAIN], dim=1)  # (N, 6, H, W)

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Visual prefix of ``frames`` (B, K, 3, H, W) uint8 → (B, prefix_len, D)."""
        return self._encode(frames)[0]

    def _encode(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(visual prefix (B, prefix_len, D), pooled crop embeddings (B, O·K, E) or None)."""
        b, k, c, h, w = frames.shape
        assert (c, h, w) == (3, *self.image_size), f"frames {tuple(frames.shape)} vs {self.image_size}"
        pixels = frames.flatten(0, 1).float() / 255.0  # (B·K, 3, H, W)
        box, crops, colours = None, [], None
        if self.config.vision.object_crops:
            n_obj = self.config.vision.max_objects
            crop, box, colours = object_crops(pixels, self.tower_size, n_obj)  # (B·K, O, 3, h, w), …
            crops = crop.unbind(1)  # O × (B·K, 3, h, w)
            pixels = F.interpolate(pixels, size=self.tower_size, mode="area")  # (B·K, 3, h, w)
            own = box.unflatten(0, (b, k))  # (B, K, 5·O [+ 1])
            motion = 4.0 * _next_frame_change(own[..., : BOX_FEATURES * n_obj])  # (B, K, 5·O)
            box = torch.cat([own, motion], dim=-1)  # (B, K, box_features(O))
        # saliency (B·K, P), patch colour (B·K, P, 6), median (B·K, 3)
        saliency, rgb, median = pixel_statistics(pixels, self.frame_encoder.stride)
        camera = None
        if self.config.resampler.camera_shift:
            deviation = pixels - median[..., None, None]  # (B·K, 3, h, w)
            camera = camera_shift_curves(deviation, k, self.config.resampler.camera_shift)  # (B, K, F)
        views = [(pixels, saliency, rgb, median)]
        if self.config.resampler.crop_tokens:  # the crops' statistics, for the resampler
            views += [(c, *pixel_statistics(c, self.frame_encoder.stride)) for c in crops]
        else:  # the tower needs only their medians
            views += [(c, None, None, frame_median(c)) for c in crops]
        colour = [True] + [self.config.vision.crop_colour] * len(crops)
        inputs = torch.cat([self.tower_input(px, med, k, colour[i])
                            for i, (px, _, _, med) in enumerate(views)])  # (V·B·K, C, h, w)
        # all views in one call (one batch-norm mix); the pooled embedding of the crops only
        tokens, pooled = self.frame_encoder(inputs, pooled_from=b * k if crops else 0)
        tokens = tokens.unflatten(0, (len(views), b, k)).transpose(0, 1).flatten(1, 2)  # (B, V·K, P, Wv)
        if not self.config.resampler.crop_tokens:
            views, tokens = views[:1], tokens[:, :k]  # the queries see the whole frames only

        def stack(i: int) -> torch.Tensor:  # the views' statistic i, (B, V·K, …)
            return torch.cat([v[i].unflatten(0, (b, k)) for v in views], dim=1)
        latents = self.resampler(tokens, stack(1), stack(2), stack(3), camera, box)  # (B, Q, Wr)
        prefix = [self.projector(latents)]  # (B, Q, D)
        if pooled is not None:  # (B, O·K, D): one token per crop (or frame) per frame
            pooled = pooled.unflatten(0, (-1, b, k)).transpose(0, 1).flatten(1, 2)  # (B, O·K, E)
            prefix.append(self.pooled_proj(pooled) + self.pooled_embed[: pooled.shape[1]])
        if self.track_mlp is not None:  # (B, 1, D)
            track = [x for x in (box, None if camera is None else 4.0 * camera) if x is not None]
            prefix.append(self.track_mlp(torch.cat(track, dim=-1).flatten(1))[:, None])
        if self.object_tokens is not None:  # (B, O + 1, D)
            split = own[..., BOX_FEATURES * n_obj:] if n_obj > 1 else None  # (B, K, 1)
            prefix.append(self.object_tokens(own[..., : BOX_FEATURES * n_obj], motion, split,
                                             colours.unflatten(0, (b, k)), pooled, camera))
        if self.colour_token_mlp is not None:  # (B, 1, D)
            rgb = (colours.unflatten(0, (b, k)) - 0.5) / 0.25  # (B, K, O + 1, 3)
            prefix.append(self.colour_token_mlp(rgb.flatten(1))[:, None])
        return torch.cat(prefix, dim=1), pooled  # (B, prefix_len, D), (B, O·K, E)

    def forward(self, frames: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                target_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits): mean cross-entropy over caption tokens; logits (B, Q + T, V).

        ``input_ids`` (B, T) are ``[bos, caption…, eos, pad…]``; ``attention_mask`` (B, T) marks
        real ids. Labels follow from them: the caption and eos are predicted, nothing else.
        ``target_ids`` (B, T), when given, are the labels' ids and ``input_ids`` what the LM reads
        (word dropout: some caption words replaced, so captions lean on the video).
        """
        prefix, pooled = self._encode(frames)  # (B, prefix_len, D), (B, O·K, E) or None
        text = self.lm.get_input_embeddings()(input_ids)  # (B, T, D)
        embeds = torch.cat([prefix, text.to(prefix.dtype)], dim=1)  # (B, Q + T, D)
        mask = torch.cat([attention_mask.new_ones(prefix.shape[:2]), attention_mask], dim=1)
        logits = self.lm(inputs_embeds=embeds, attention_mask=mask).logits  # (B, Q + T, V)
        targets = input_ids if target_ids is None else target_ids
        labels = caption_labels(targets, attention_mask, prefix.shape[1])  # (B, Q + T)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                               ignore_index=IGNORE)
        if self.word_head is not None and self.training:
            loss = loss + self.config.vision.word_head * self._word_loss(pooled, labels)
        return loss, logits

    def _word_loss(self, pooled: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Which caption tokens occur, predicted from the clip's mean pooled crop embedding:
        binary cross-entropy summed over the vocabulary, per caption token that occurs."""
        occurs = torch.zeros(labels.shape[0], self.vocab_size + 1, device=labels.device)
        occurs.scatter_(1, labels.masked_fill(labels == IGNORE, self.vocab_size), 1.0)
        occurs = occurs[:, :-1]  # (B, V): the IGNORE slot dropped
        logits = self.word_head(pooled.mean(1)).float()  # (B, V)
        bce = F.binary_cross_entropy_with_logits(logits, occurs, reduction="none").sum(1)  # (B,)
        return (bce / occurs.sum(1).clamp(min=1)).mean()

    @torch.no_grad()
    def generate(self, frames: torch.Tensor, bos_id: int, eos_id: int,
                 max_new_tokens: int | None = None) -> torch.Tensor:
        """Greedy captions (B, T_gen) ending in eos (or cut at ``max_new_tokens``)."""
        max_new_tokens = max_new_tokens or self.config.generate.max_new_tokens
        prefix = self.encode_video(frames)  # (B, prefix_len, D)
        bos = torch.full((prefix.shape[0], 1), bos_id, dtype=torch.long, device=prefix.device)
        embeds = torch.cat([prefix, self.lm.get_input_embeddings()(bos).to(prefix.dtype)], 1)
        out = self.lm(inputs_embeds=embeds, use_cache=True)  # logits: (B, Q + 1, V)
        done = torch.zeros(prefix.shape[0], dtype=torch.bool, device=prefix.device)
        tokens = []
        for _ in range(max_new_tokens):
            nxt = out.logits[:, -1].argmax(-1)  # (B,)
            nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
            tokens.append(nxt)
            done |= nxt == eos_id
            if bool(done.all()):
                break
            out = self.lm(input_ids=nxt[:, None], past_key_values=out.past_key_values,
                          use_cache=True)  # logits: (B, 1, V)
        return torch.stack(tokens, dim=1)  # (B, T_gen)


CROP_MARGIN = 0.35  # the crop adds this share of the salient box's side on each side
CROP_MIN_SIDE = 0.2  # … and is at least this share of the frame's side
SPLIT_MIN_GAP = 2  # empty rows / columns (pixels) between two objects for the crops to split
SPLIT_EMPTY = 1  # a row / column with at most this many salient pixels counts as empty


BOX_FEATURES = 5  # per crop: centre x, centre y, side, salient share, object scale


def box_features(objects: int) -> int:
    """Per-frame object-box features for ``vision.max_objects`` = ``objects``: each crop's
    centre (x, y), side, salient share and object scale, their change to the next frame, and
    (for 2) whether the salient pixels split into two objects."""
    return 2 * BOX_FEATURES * objects + (objects > 1)


def object_crops(pixels: torch.Tensor, size: tuple[int, int],
                 objects: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Square crops of each frame around what stands out from its background.

    ``pixels`` (N, 3, H, W) in [0, 1] → crops (N, O, 3, *size), box features (N, 5·O [+ 1])
    and colours (N, O + 1, 3) for O = ``objects`` (1 or 2). Box features per crop: its centre
    (−1…1, as ``affine_grid`` takes it), its side (frame units 0…2, minus 1), the share of
    salient pixels in it (× 8, minus 1) and the object's scale: log2 of the geometric mean of
    its salient box's width and height as shares of the frame's, over 0.2 (0 for an object a
    fifth of the frame across). Frames arrive squashed to a square, so the side depends on the
    source's aspect ratio (an object as wide as a fifth of the frame is 0.15 of a 16:9 frame's
    height) and the scale does not (√(w/W · h/H) = d/√(W·H) for an object d across). With O = 2
    a last feature says whether the salient pixels split in two (+1) or not (−1). Colours: each
    object's mean salient colour (the frame's median when it has no salient pixel), then the
    frame's median.
    Salient: Σ|pixel − the frame's median colour| over RGB above SILHOUETTE_FLOOR +
    SILHOUETTE_RISE / 2 (objects, not the faint background texture); a box spans the 2nd to 98th
    percentile of its pixels' rows and columns, so a stray pixel does not stretch it. With O = 2
    the salient pixels are cut in two at the widest empty band of columns or rows between them
    (an X–Y cut, at least SPLIT_MIN_GAP wide): the first crop shows the left (or top) object,
    the second the right (or bottom) one; without such a band both crops show everything. A
    frame with no salient pixel gives the whole frame.
    """
    n, _, h, w = pixels.shape
    median = frame_median(pixels)  # (N, 3)
    mask = _salient(pixels, median)  # (N, H, W)
    parts, split = [mask], None
    if objects == 2:
        parts, split = _split_in_two(mask)  # 2 × (N, H, W), (N,) bool
    elif objects != 1:
        raise ValueError(f"vision.max_objects must be 1 or 2, not {objects}")
    boxes = torch.stack([_crop_box(part) for part in parts], dim=1)  # (N, O, 4): cx, cy, side, share
    theta = torch.zeros(n * len(parts), 2, 3, dtype=pixels.dtype, device=pixels.device)
    flat = boxes.flatten(0, 1)  # (N·O, 4)
    theta[:, 0, 0], theta[:, 1, 1] = flat[:, 2] / 2, flat[:, 2] / 2
    theta[:, 0, 2], theta[:, 1, 2] = flat[:, 0], flat[:, 1]
    grid = F.affine_grid(theta, [len(flat), 3, *size], align_corners=False)  # (N·O, h, w, 2)
    # one sampling pass per frame for all its crops (their grids stacked along the rows): no
    # copy of the frame per crop
    grid = grid.reshape(n, len(parts) * size[0], size[1], 2)  # (N, O·h, w, 2)
    crops = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)
    crops = crops.unflatten(2, (len(parts), size[0])).transpose(1, 2).flatten(0, 1)  # (N·O, 3, h, w)
    features = torch.cat([boxes[..., :2], boxes[..., 2:3] - 1, 8 * boxes[..., 3:4] - 1,
                          torch.log2(boxes[..., 4:] / 0.2)], dim=-1)
    features = features.flatten(1)  # (N, 5·O), roughly unit range
    if split is not None:
        features = torch.cat([features, 2 * split.float()[:, None] - 1], dim=1)  # (N, 5·O + 1)
    colours = [_mean_colour(pixels, part, median) for part in parts] + [median]
    return crops.unflatten(0, (n, len(parts))), features, torch.stack(colours, dim=1)


def _salient(pixels: torch.Tensor, median: torch.Tensor) -> torch.Tensor:
    """(N, H, W) 0/1: pixels of ``pixels`` (N, 3, H, W) that stand out from their frame's
    ``median`` (N, 3): Σ|pixel − median| over RGB above SILHOUETTE_FLOOR + SILHOUETTE_RISE / 2."""
    deviation = (pixels - median[..., None, None]).abs().sum(1)  # (N, H, W)
    return (deviation > SILHOUETTE_FLOOR + SILHOUETTE_RISE / 2).float()


def split_clips(frames: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """(N,) bool: whether most frames of each clip in ``frames`` (N, K, 3, H, W) uint8 cut into
    two objects (``object_crops``' X–Y cut at an empty band). Such clips show their objects in
    a spatial order (left / top first) that their captions may follow."""
    n, k = frames.shape[:2]
    flat = frames.flatten(0, 1)  # (N·K, 3, H, W)
    votes = []
    for i in range(0, len(flat), chunk):
        pixels = flat[i:i + chunk].float() / 255.0
        votes.append(_split_in_two(_salient(pixels, frame_median(pixels)))[1])
    if not n:
        return torch.zeros(0, dtype=torch.bool)
    return torch.cat(votes).view(n, k).float().mean(1) > 0.5  # (N,)


def _mean_colour(pixels: torch.Tensor, mask: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Mean RGB (N, 3) of ``pixels`` (N, 3, H, W) where ``mask`` (N, H, W); ``fallback`` where
    the mask is empty."""
    count = mask.sum(dim=(1, 2))[:, None]  # (N, 1)
    total = torch.einsum("nchw,nhw->nc", pixels, mask.to(pixels.dtype))  # (N, 3): one batched matmul
    return torch.where(count > 0, total / count.clamp(min=1), fallback)


def _crop_box(mask: torch.Tensor) -> torch.Tensor:
    """(N, 5) crop box around the salient pixels of ``mask`` (N, H, W): centre x, centre y
    (−1…1), side (frame units, 0…2, margin and minimum side included), salient share, and the
    object's scale √(width share · height share) of the salient box (at least 1/32)."""
    _, h, w = mask.shape
    share = mask.mean(dim=(1, 2))  # (N,)
    y0, y1 = _mass_range(mask.sum(2))  # (N,) in pixels, rows
    x0, x1 = _mass_range(mask.sum(1))  # (N,) columns
    cx, cy = (x0 + x1 + 1) / w - 1, (y0 + y1 + 1) / h - 1  # (N,) centre in −1…1
    side = torch.maximum((x1 - x0 + 1) / w, (y1 - y0 + 1) / h) * 2 * (1 + 2 * CROP_MARGIN)  # (N,)
    side = side.clamp(min=2 * CROP_MIN_SIDE, max=2.0)
    scale = torch.sqrt((x1 - x0 + 1) / w * (y1 - y0 + 1) / h)  # (N,)
    empty = share == 0
    cx, cy, side = cx.masked_fill(empty, 0.0), cy.masked_fill(empty, 0.0), side.masked_fill(empty, 2.0)
    scale = scale.masked_fill(empty, 0.0).clamp(min=1 / 32)
    return torch.stack([cx, cy, side, share, scale], dim=1)


def _split_in_two(mask: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``mask`` (N, H, W) cut at the middle of its widest empty band of columns (or rows, when
    that band is wider) between salient pixels: ([first part, second part], split (N,) bool).
    Frames without a band of SPLIT_MIN_GAP give the whole mask as both parts."""
    col_gap, col_cut = _widest_gap(mask.sum(1))  # (N,) each
    row_gap, row_cut = _widest_gap(mask.sum(2))
    by_cols = col_gap >= row_gap  # (N,)
    cut = torch.where(by_cols, col_cut, row_cut)  # (N,)
    split = torch.maximum(col_gap, row_gap) >= SPLIT_MIN_GAP  # (N,)
    _, h, w = mask.shape
    cols = torch.arange(w, device=mask.device)[None, None, :] < cut[:, None, None]  # (N, 1, W)
    rows = torch.arange(h, device=mask.device)[None, :, None] < cut[:, None, None]  # (N, H, 1)
    first = torch.where(by_cols[:, None, None], cols, rows)  # (N, H, W): the left / top side
    keep_all = ~split[:, None, None]
    return [mask * (first | keep_all), mask * (~first | keep_all)], split


def _widest_gap(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Widest run of empty positions (≤ SPLIT_EMPTY) with salient mass on both sides, in
    ``counts`` (N, L): (its length (N,), the index at its middle (N,))."""
    pos = torch.arange(counts.shape[1], device=counts.device)  # (L,)
    occupied = counts > SPLIT_EMPTY  # (N, L)
    before = occupied.cumsum(1) > 0  # (N, L): something salient at or before
    after = occupied.flip(1).cumsum(1).flip(1) > 0  # … at or after
    gap = ~occupied & before & after  # (N, L)
    last_kept = torch.where(gap, torch.full_like(pos, -1), pos).cummax(dim=1).values  # (N, L)
    run = torch.where(gap, pos - last_kept, torch.zeros_like(pos))  # gap run ending here
    length, end = run.max(dim=1)  # (N,)
    return length, end - length // 2


def _mass_range(counts: torch.Tensor, lo: float = 0.02,
                hi: float = 0.98) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last index (N,) between which the mass of ``counts`` (N, L) lies, trimming
    ``lo`` and ``1 − hi`` of it at the ends (meaningless for all zeros: callers mask those)."""
    cum = counts.cumsum(1)  # (N, L)
    total = cum[:, -1:].clamp(min=1e-6)  # (N, 1)
    first = (cum < lo * total).sum(1).float()  # (N,)
    last = (cum < hi * total).sum(1).float()  # (N,)
    return first, last.clamp(max=counts.shape[1] - 1)


def silhouette_of(deviation: torch.Tensor) -> torch.Tensor:
    """Colour-free silhouette (…, 1, H, W) in 0..1 of ``deviation`` (…, 3, H, W), pixels minus
    their frame's median colour: Σ|deviation| over RGB ramped from SILHOUETTE_FLOOR over
    SILHOUETTE_RISE to 1 (objects, not the faint background texture)."""
    outline = deviation.abs().sum(-3, keepdim=True)  # (…, 1, H, W)
    return ((outline - SILHOUETTE_FLOOR) / SILHOUETTE_RISE).clamp(0.0, 1.0)


def motion_channels(deviation: torch.Tensor, k: int) -> torch.Tensor:
    """Colour- and texture-free tower input from ``deviation`` (B·K, 3, H, W), frames minus medians.

    Channels: silhouette (Σ|deviation| over RGB ramped from SILHOUETTE_FLOOR over
    SILHOUETTE_RISE to 1: objects, not the faint background texture) and its change to the next
    frame of the same clip (the last frame repeats the change before it). → (B·K, 2, H, W).
    """
    silhouette = silhouette_of(deviation)  # (N, 1, H, W)
    change = _next_frame_change(silhouette.unflatten(0, (-1, k))).flatten(0, 1)  # (N, 1, H, W)
    return torch.cat([2.0 * silhouette - 0.5, 2.0 * change], dim=1)  # (N, 2, H, W)


def _next_frame_change(x: torch.Tensor) -> torch.Tensor:
    """x[:, t + 1] − x[:, t] along dim 1 (B, K, …), the last step repeated; zeros for K = 1."""
    if x.shape[1] == 1:
        return torch.zeros_like(x)
    change = x[:, 1:] - x[:, :-1]  # (B, K - 1, …)
    return torch.cat([change, change[:, -1:]], dim=1)  # (B, K, …)


def camera_curve_width(max_shift: int) -> int:
    """Features per frame of :func:`camera_shift_curves` (0: no camera curves)."""
    return 2 * (2 * max_shift + 1) if max_shift else 0


def camera_shift_curves(deviation: torch.Tensor, k: int, max_shift: int) -> torch.Tensor:
    """How the background moves from each frame to the next: (B·K, 3, H, W) → (B, K, 2·(2S+1)).

    The luminance's column profile (median over rows) and row profile (median over columns)
    are normalised and correlated with the next frame's at shifts −S…S (S = ``max_shift``).
    """
    lum = deviation.mean(1)  # (N, H, W)
    curves = []
    for profile in (lum.median(dim=1).values, lum.median(dim=2).values):  # (N, W), (N, H)
        profile = profile - profile.mean(1, keepdim=True)
        profile = profile / (profile.norm(dim=1, keepdim=True) + 1e-4)  # (N, L)
        profile = profile.unflatten(0, (-1, k))  # (B, K, L)
        nxt = torch.cat([profile[:, 1:], profile[:, -1:]], dim=1) if k > 1 else profile
        padded = F.pad(nxt, (max_shift, max_shift))  # (B, K, L + 2S)
        windows = padded.unfold(2, profile.shape[2], 1)  # (B, K, 2S + 1, L)
        curves.append((windows * profile[:, :, None, :]).sum(-1))  # (B, K, 2S + 1)
    out = torch.cat(curves, dim=-1)  # (B, K, 2·(2S+1))
    if k > 1:
        out = torch.cat([out[:, :-1], out[:, -2:-1]], dim=1)  # the last frame: the change before it
    return out


def caption_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   prefix_len: int) -> torch.Tensor:
    """Labels (B, Q + T): caption ids and eos; IGNORE on the prefix, bos and padding."""
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE)  # (B, T)
    labels[:, 0] = IGNORE  # bos is given, not predicted
    prefix = labels.new_full((labels.shape[0], prefix_len), IGNORE)  # (B, Q)
    return torch.cat([prefix, labels], dim=1)  # (B, Q + T)


def parameter_groups(model: VideoCaptioner, lr: float, vision_lr: float | None,
                     weight_decay: float) -> list[dict]:
    """AdamW groups: no decay on biases, norms and embeddings; the vision tower's own lr.

    Each group is tagged ``visual`` so the trainer can give the tower its own warmup.
    """
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 and not any(k in name for k in ("embed", "queries", "saliency"))
        groups.setdefault((name.startswith("frame_encoder."), decay), []).append(p)
    return [{"params": ps, "weight_decay": weight_decay if decay else 0.0,
             "lr": (vision_lr or lr) if is_visual else lr, "visual": is_visual}
            for (is_visual, decay), ps in sorted(groups.items())]
