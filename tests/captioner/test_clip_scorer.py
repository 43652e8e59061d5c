"""ClipScorer: any open_clip model from a local weights file; batched, normalised embeddings."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from captioner.clip_scorer import ClipScorer, ClipScorerConfig, model_tag


@pytest.fixture(scope="module")
def vit_b_32_weights(tmp_path_factory) -> str:
    """A random-init ViT-B-32 saved as a plain state dict (what a downloaded checkpoint looks like)."""
    import open_clip
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32")
    path = tmp_path_factory.mktemp("weights") / "vit-b-32.pt"
    torch.save(model.state_dict(), path)
    return str(path)


def test_loads_vit_b_32_from_a_local_file_and_embeds_in_batches(vit_b_32_weights):
    import open_clip
    scorer = ClipScorer(ClipScorerConfig("ViT-B-32", vit_b_32_weights, batch_size=3, threads=1)).load()
    assert (scorer.device, scorer.precision, scorer.image_size, scorer.embed_dim) == ("cpu", "fp32", 224, 512)
    frames = np.random.default_rng(0).integers(0, 256, (2, 2, 224, 224, 3), dtype=np.uint8)
    video = scorer.video_embeddings(frames)  # 4 frames in batches of 3
    assert video.shape == (2, 512) and np.allclose(np.linalg.norm(video, axis=1), 1.0, atol=1e-5)

    reference = open_clip.create_model("ViT-B-32", pretrained=vit_b_32_weights).eval()
    per_frame = scorer.encode_frames(frames[0])
    with torch.no_grad():
        x = (torch.from_numpy(frames[0]).permute(0, 3, 1, 2).float() / 255
             - torch.tensor(reference.visual.image_mean).view(1, 3, 1, 1)) / torch.tensor(reference.visual.image_std).view(1, 3, 1, 1)
        expected = reference.encode_image(x, normalize=True).numpy()
    assert np.allclose(per_frame, expected, atol=1e-4)

    texts = scorer.encode_texts(["a red ball", "static noise", "a red ball"])
    assert texts.shape == (3, 512) and np.allclose(texts[0], texts[2])
    assert scorer.logit_scale == pytest.approx(1 / 0.07, rel=1e-3)


def test_model_tag_names_the_weights(vit_b_32_weights, tmp_path):
    tag = model_tag("ViT-B-32", vit_b_32_weights)
    assert tag.startswith("ViT-B-32@") and tag == model_tag("ViT-B-32", vit_b_32_weights)
    assert model_tag("ViT-B-32", None) == "ViT-B-32@random-init"


def test_refuses_weights_that_would_download_and_unknown_models():
    with pytest.raises(ValueError, match="never downloaded"):
        ClipScorerConfig("ViT-B-32", pretrained="openai")
    with pytest.raises(ValueError, match="unknown CLIP model"):
        ClipScorer(ClipScorerConfig("ViT-Nope")).load()
    with pytest.raises(RuntimeError, match="load"):
        ClipScorer().encode_texts(["x"])


def test_bf16_autocast_path_matches_fp32():
    """The GPU path (bf16 autocast) exercised on the CPU: same directions within bf16 precision."""
    frames = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    torch.manual_seed(0)
    fp32 = ClipScorer(ClipScorerConfig(threads=1)).load()
    bf16 = ClipScorer(ClipScorerConfig(precision="amp_bf16", threads=1))
    bf16.load()
    bf16.model.load_state_dict(fp32.model.state_dict())
    assert bf16.precision == "amp_bf16"
    a, b = fp32.encode_frames(frames), bf16.encode_frames(frames)
    assert b.dtype == np.float32 and np.all(np.sum(a * b, axis=1) > 0.99)
