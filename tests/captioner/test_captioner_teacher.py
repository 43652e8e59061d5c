"""Teacher captions from a local Hugging Face VLM: a tiny random LLaVA built offline in a temp dir.

The processor needs a tokenizer and an image processor: the tokenizer is a byte-level BPE
trained with ``tokenizers`` and wrapped as ``PreTrainedTokenizerFast`` (with an ``<image>``
token), the image processor a ``CLIPImageProcessor`` at 32 px; both are saved with the model
and loaded back through ``AutoProcessor`` / ``AutoModelForImageTextToText``.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from captioner.teacher import TeacherCaptioner, teacher_source
from pipelines.caption_stage import CaptionJobConfig, run_caption_job
from storage import Catalog, CorpusRoot


def build_tiny_llava(out: Path) -> Path:
    """Save a random 1-layer LLaVA and its processor to ``out``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor,
                              PreTrainedTokenizerFast)

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>", "<pad>", "<image>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    backend.train_from_iterator(["a red circle moves left over a blue background"], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                              num_attention_heads=2, image_size=32, patch_size=8, projection_dim=32)
    text = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, vocab_size=len(tokenizer),
                       max_position_embeddings=256)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(out)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                   ).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_teacher_dir(tmp_path_factory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("teachers") / "tiny-llava")


def test_tiny_random_teacher_produces_text(tiny_teacher_dir, synth_items):
    teacher = TeacherCaptioner.load(tiny_teacher_dir, device="cpu", n_frames=2, max_new_tokens=6)
    assert teacher.source == "teacher:tiny-llava" == teacher_source(tiny_teacher_dir)
    frames = [teacher.frames(it.path) for it in synth_items[:3]]
    assert frames[0].shape == (2, 3, 32, 32)
    texts, n_tokens = teacher.caption_frames(frames, batch_size=2)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert n_tokens > 0 and any(texts)


def test_teacher_captions_land_in_the_catalog(tiny_teacher_dir, synth_items, tmp_path):
    cat = Catalog(CorpusRoot.open(tmp_path / "root", create=True))
    cat.append("clips", [dict(clip_id=f"c{i}", video_id="v", uri=it.path)
                         for i, it in enumerate(synth_items[:2])])
    result = run_caption_job(CaptionJobConfig(root=str(tmp_path / "root"), teacher=str(tiny_teacher_dir),
                                              runner="local", batch_size=2))
    assert result.captioned == 2 and result.source == "teacher:tiny-llava"
    rows = cat.query("SELECT source FROM captions").to_pylist()
    assert rows == [{"source": "teacher:tiny-llava"}] * 2
