"""Teacher captions from a local Hugging Face VLM, to distil into the student captioner later.

Any image-text-to-text model that ``AutoModelForImageTextToText`` and ``AutoProcessor`` load
from a local directory works: LLaVA, LLaVA-OneVision, Qwen2-VL, ... A clip is shown as ``frames``
images sampled at segment centres (a multi-image prompt works across these families, where
video inputs differ per family). The prompt is built with the processor's chat template when it
has one, else as ``<image token> × frames + prompt``. Captions are written with source
``teacher:<directory name>``; train the student on them with
``vidcorpus train-captioner --caption-source teacher:<name>``.

    vidcorpus caption --root ROOT --teacher /models/llava-onevision-qwen2-0.5b-ov-hf
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from captioner.captioner_data import sample_frames

DEFAULT_PROMPT = ("Describe this video in one detailed sentence: every object with its colour, "
                  "size, shape and motion, the background, and how the camera moves.")


def teacher_source(path: str | Path) -> str:
    """The ``captions.source`` of a teacher directory: ``teacher:<directory name>``."""
    return f"teacher:{Path(path).resolve().name}"


@dataclass
class TeacherCaptioner:
    """A loaded VLM and its processor; same interface as ``CaptionPredictor``."""

    model: torch.nn.Module
    processor: object
    path: str
    n_frames: int = 4
    prompt: str = DEFAULT_PROMPT
    max_new_tokens: int = 96

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, **kwargs) -> "TeacherCaptioner":
        from transformers import AutoModelForImageTextToText, AutoProcessor

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        model = AutoModelForImageTextToText.from_pretrained(str(path), local_files_only=True,
                                                            dtype=dtype).to(device).eval()
        processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
        processor.tokenizer.padding_side = "left"  # batched generation continues on the right
        return cls(model, processor, str(path), **kwargs)

    @property
    def name(self) -> str:
        return Path(self.path).resolve().name

    @property
    def source(self) -> str:
        return teacher_source(self.path)

    @property
    def image_size(self) -> int:
        """Side the image processor works at (frames are squashed to it)."""
        ip = self.processor.image_processor
        size = getattr(ip, "crop_size", None) or getattr(ip, "size", None) or {}
        if isinstance(size, int):
            return size
        return int(size.get("height") or size.get("shortest_edge") or 336)

    def frames(self, path: str) -> np.ndarray:
        """(K, 3, S, S) uint8 frames of one clip file."""
        return sample_frames(path, self.n_frames, self.image_size)

    def prompt_text(self) -> str:
        """The prompt with one image placeholder per frame."""
        if getattr(self.processor, "chat_template", None):
            content = [{"type": "image"}] * self.n_frames + [{"type": "text", "text": self.prompt}]
            return self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                      add_generation_prompt=True)
        return self.processor.image_token * self.n_frames + self.prompt

    @torch.no_grad()
    def caption_frames(self, frames: Sequence[np.ndarray], batch_size: int = 8) -> tuple[list[str], int]:
        """Greedy captions of clips' frames ((K, 3, S, S) uint8 each) and the generated tokens."""
        texts, n_tokens = [], 0
        for i in range(0, len(frames), batch_size):
            chunk = frames[i:i + batch_size]
            images = [f.transpose(1, 2, 0) for clip in chunk for f in np.asarray(clip)]
            inputs = self.processor(images=images, text=[self.prompt_text()] * len(chunk),
                                    padding=True, return_tensors="pt").to(self.model.device)
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            new = out[:, inputs["input_ids"].shape[1]:]  # (B, T_gen)
            n_tokens += int((new != self.processor.tokenizer.pad_token_id).sum())
            texts += [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]
        return texts, n_tokens
