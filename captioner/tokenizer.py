"""Caption tokenizers: a byte-level BPE trained on the captions (tiny), or an LM's own tokenizer.

Both are a ``tokenizers.Tokenizer`` plus three special ids (bos, eos, pad), so the captioner
handles them the same way and a checkpoint can carry the tokenizer as one JSON string
(``CaptionTokenizer.to_dict`` / ``from_dict``). Byte-level pre-tokenization makes every string
encodable and ``decode(encode(text)) == text`` exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"


@dataclass
class CaptionTokenizer:
    """A ``tokenizers.Tokenizer`` with the ids the captioner needs around a caption."""

    backend: Tokenizer
    bos_id: int
    eos_id: int
    pad_id: int

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``, stopping at the first eos; special tokens are dropped."""
        ids = list(ids)
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.backend.decode(ids, skip_special_tokens=True)

    def caption_ids(self, text: str, max_len: int) -> list[int]:
        """``[bos] + encode(text) + [eos]``, the caption cut to fit ``max_len`` ids in all."""
        body = self.encode(text)[: max(0, max_len - 2)]
        return [self.bos_id, *body, self.eos_id]

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """A JSON-able dict (what a checkpoint stores)."""
        return {"json": self.backend.to_str(), "bos_id": self.bos_id, "eos_id": self.eos_id,
                "pad_id": self.pad_id}

    @classmethod
    def from_dict(cls, d: dict) -> "CaptionTokenizer":
        return cls(Tokenizer.from_str(d["json"]), d["bos_id"], d["eos_id"], d["pad_id"])

    def save(self, path: str | Path) -> None:
        """Write ``tokenizer.json`` (loadable by ``tokenizers`` and ``PreTrainedTokenizerFast``)."""
        self.backend.save(str(path))


def train_bpe(texts: Iterable[str], vocab_size: int = 512, min_frequency: int = 2) -> CaptionTokenizer:
    """Train a byte-level BPE on ``texts``; specials bos/eos/pad get ids 0, 1, 2."""
    texts = list(texts)
    if not texts:
        raise ValueError("cannot train a tokenizer on zero captions")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=[BOS, EOS, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer=trainer)
    return CaptionTokenizer(backend, backend.token_to_id(BOS), backend.token_to_id(EOS),
                            backend.token_to_id(PAD))


def tokenizer_from_lm_dir(path: str | Path) -> CaptionTokenizer:
    """The tokenizer of a Hugging Face LM directory (fast tokenizers only).

    LMs without a bos token (e.g. Qwen2) use eos as the separator between the visual prefix and
    the caption; a missing pad token falls back to eos as well.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"{path}: the captioner needs a fast tokenizer (tokenizer.json)")
    eos = tok.eos_token_id
    if eos is None:
        raise ValueError(f"{path}: tokenizer has no eos token; set one in tokenizer_config.json")
    bos = tok.bos_token_id if tok.bos_token_id is not None else eos
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    return CaptionTokenizer(tok.backend_tokenizer, bos, eos, pad)
