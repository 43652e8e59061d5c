"""Text conditioning: per-token caption features (L, D_text) and a mask, from a frozen encoder.

Two kinds of encoder (`TextConfig.kind`):

- "clip": the text tower of an open_clip model, token features after the final LayerNorm.
  `model="tiny"` is a small built-in tower (width 32, 2 layers, open_clip's BPE tokenizer);
  any other name is an open_clip config. `checkpoint` loads local weights: an open_clip state
  dict, or the dict `vidcorpus train-clip` writes (state_dict + model_config, e.g. the tiny
  CLIP of the demo). Without a checkpoint the tower is randomly initialised from `seed`:
  frozen random features still tell colour words apart, which is all a tiny DiT needs.
- "hf": a transformers encoder from a local directory (`checkpoint`): T5 / UMT5 / MT5 through
  `T5EncoderModel`, CLIP through `CLIPTextModel`, anything else through `AutoModel`;
  features are `last_hidden_state`, the mask is the tokenizer's attention mask.

The null caption (classifier-free guidance, caption dropout) is the encoding of "": open_clip
gives [SOT, EOT], T5 [EOS], CLIP/BERT two tokens, so it always has >= 1 valid token.
Nothing downloads: weights and tokenizers come from local files (open_clip ships its BPE).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

TEXT_KINDS = ("clip", "hf")
TINY_TEXT_CFG = dict(context_length=32, vocab_size=49408, width=32, heads=2, layers=2, mlp_ratio=2.0)


@dataclass(frozen=True)
class TextConfig:
    kind: str = "clip"              # clip | hf
    model: str = "tiny"             # clip: "tiny" or an open_clip model name
    checkpoint: str | None = None   # clip: local weights file; hf: the model directory
    max_length: int = 32            # caption tokens kept (clip: at most the context length)
    seed: int = 0                   # random init of a clip tower without checkpoint

    def __post_init__(self):
        if self.kind not in TEXT_KINDS:
            raise ValueError(f"text encoder kind must be one of {TEXT_KINDS}, got {self.kind!r}")
        if self.kind == "hf" and not self.checkpoint:
            raise ValueError("an 'hf' text encoder needs checkpoint=<local transformers directory>")


class ClipTextTower(nn.Module):
    """The token path of an open_clip text transformer (no pooling, no projection)."""

    def __init__(self, source: nn.Module):
        super().__init__()
        self.token_embedding = source.token_embedding
        self.positional_embedding = source.positional_embedding
        self.transformer = source.transformer
        self.ln_final = source.ln_final
        self.register_buffer("attn_mask", source.attn_mask, persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens: (B, L) int -> features (B, L, width)."""
        L = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:L]        # (B, L, W)
        mask = None if self.attn_mask is None else self.attn_mask[:L, :L]
        return self.ln_final(self.transformer(x, attn_mask=mask))              # (B, L, W)


def _open_clip_source(config: TextConfig) -> nn.Module:
    """An open_clip module with token_embedding, positional_embedding, transformer, ln_final."""
    import open_clip
    from open_clip.model import CLIP
    from open_clip.transformer import TextTransformer
    ckpt = torch.load(config.checkpoint, map_location="cpu", weights_only=False) if config.checkpoint else None
    if isinstance(ckpt, dict) and "model_config" in ckpt:                     # vidcorpus train-clip
        model = CLIP(**ckpt["model_config"])
        model.load_state_dict(ckpt["state_dict"])
        return model
    if config.model == "tiny":
        if ckpt is not None:
            raise ValueError("model='tiny' is random-init only; pass a train-clip checkpoint or a model name")
        return TextTransformer(**TINY_TEXT_CFG, output_dim=None)
    model = open_clip.create_model(config.model, pretrained=None)
    if ckpt is not None:
        model.load_state_dict(ckpt.get("state_dict", ckpt))
    return getattr(model, "text", model)


def _open_clip_tokenizer(config: TextConfig, context_length: int):
    import open_clip
    if config.model == "tiny" or config.model not in open_clip.list_models():
        return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)
    return open_clip.get_tokenizer(config.model, context_length=context_length)


class TextEncoder(nn.Module):
    """Frozen caption encoder: `encode(captions) -> (features (B, L, D), mask (B, L))`."""

    def __init__(self, config: TextConfig = TextConfig()):
        super().__init__()
        self.config = config
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            if config.kind == "clip":
                self._init_clip(config)
            else:
                self._init_hf(config)
        self.requires_grad_(False).eval()

    def _init_clip(self, config: TextConfig) -> None:
        self.tower = ClipTextTower(_open_clip_source(config))
        self.length = min(config.max_length, self.tower.positional_embedding.shape[0])
        self.tokenizer = _open_clip_tokenizer(config, self.length)
        self.dim = self.tower.positional_embedding.shape[1]

    def _init_hf(self, config: TextConfig) -> None:
        from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel, T5EncoderModel
        kind = AutoConfig.from_pretrained(config.checkpoint, local_files_only=True).model_type
        cls = AutoModel
        if kind in ("t5", "umt5", "mt5"):
            cls = T5EncoderModel
        elif kind.startswith("clip"):
            cls = CLIPTextModel
        self.tower = cls.from_pretrained(config.checkpoint, local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(config.checkpoint, local_files_only=True)
        self.length = config.max_length
        self.dim = self.tower.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.tower.parameters()).device

    @torch.no_grad()
    def encode(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        """captions -> features (B, L, D) float32, mask (B, L) bool (True = real token)."""
        if self.config.kind == "clip":
            tokens = self.tokenizer(captions).to(self.device)                  # (B, L)
            return self.tower(tokens).float(), tokens != 0
        enc = self.tokenizer(captions, padding="max_length", truncation=True, max_length=self.length,
                             return_tensors="pt").to(self.device)
        out = self.tower(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        return out.last_hidden_state.float(), enc["attention_mask"].bool()

    def encode_one(self, caption: str) -> Tensor:
        """One caption -> its real tokens' features (L_valid, D)."""
        feats, mask = self.encode([caption])
        return feats[0][mask[0]]

    def null(self) -> tuple[Tensor, Tensor]:
        """The empty caption: features (L0, D) and mask (L0,), >= 1 real token."""
        text = self.encode_one("")
        return text, torch.ones(text.shape[0], dtype=torch.bool, device=text.device)

    def spec(self) -> dict[str, Any]:
        """How to rebuild this encoder; weights are included when they exist in no file."""
        random_init = self.config.kind == "clip" and self.config.checkpoint is None
        return {"config": asdict(self.config), "state_dict": self.state_dict() if random_init else None}


def load_text_encoder(spec: dict[str, Any] | TextConfig, device: str | torch.device = "cpu") -> TextEncoder:
    """A TextEncoder from a config or from the `spec()` a DiT checkpoint stores."""
    if isinstance(spec, TextConfig):
        return TextEncoder(spec).to(device)
    encoder = TextEncoder(TextConfig(**spec["config"]))
    if spec.get("state_dict") is not None:
        encoder.load_state_dict(spec["state_dict"])
    return encoder.to(device)
