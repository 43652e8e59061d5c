"""Text conditioning: open_clip text towers (tiny, train-clip checkpoints) and local transformers encoders."""

import pytest
import torch

from generator.text import TextConfig, TextEncoder, load_text_encoder

pytestmark = pytest.mark.usefixtures("one_thread")   # fast and bit-exact on a busy shared CPU

COLOURS = ("blue", "green", "white", "gray", "yellow", "purple", "brown")


@pytest.fixture(scope="module")
def tiny() -> TextEncoder:
    return TextEncoder()


def test_tiny_tower_gives_token_features_and_a_mask(tiny):
    feats, mask = tiny.encode(["a red circle moves left over a blue background", ""])
    assert feats.shape == (2, 32, tiny.dim) and tiny.dim == 32 and feats.dtype == torch.float32
    assert mask.sum(1).tolist() == [11, 2]                        # SOT + 9 words + EOT; SOT + EOT
    one = tiny.encode_one("a red circle moves left over a blue background")
    torch.testing.assert_close(one, feats[0, :11])


def test_null_caption_has_a_real_token(tiny):
    null, mask = tiny.null()
    assert null.shape[0] >= 1 and bool(mask.all())
    torch.testing.assert_close(null, tiny.encode_one(""))


def test_colour_words_map_to_distinct_features(tiny):
    feats = torch.stack([tiny.encode_one(f"a square over a {c} background").mean(0) for c in COLOURS])
    dist = torch.cdist(feats, feats) + torch.eye(len(COLOURS)) * 1e9
    assert dist.min() > 0.1


def test_random_tower_is_reproducible_and_travels_in_its_spec(tiny):
    again = TextEncoder(TextConfig(seed=0))
    torch.testing.assert_close(again.encode_one("over a gray background"), tiny.encode_one("over a gray background"))
    other = TextEncoder(TextConfig(seed=1))
    assert not torch.allclose(other.encode_one("hi"), tiny.encode_one("hi"))
    spec = tiny.spec()
    assert spec["state_dict"] is not None
    torch.testing.assert_close(load_text_encoder(spec).encode_one("x y z"), tiny.encode_one("x y z"))


def test_loads_the_checkpoint_train_clip_writes(tmp_path):
    from open_clip.model import CLIP
    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 24, "heads": 2, "layers": 1}}
    torch.manual_seed(3)
    clip = CLIP(**cfg)
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": clip.state_dict(), "model_name": "vidcorpus-clip-x", "model_config": cfg}, path)
    enc = TextEncoder(TextConfig(checkpoint=str(path), max_length=64))
    assert enc.dim == 24 and enc.length == 16                      # capped at the tower's context
    torch.testing.assert_close(enc.tower.token_embedding.weight, clip.token_embedding.weight)
    feats, mask = enc.encode(["over a blue background"])
    x = clip.token_embedding(enc.tokenizer(["over a blue background"])) + clip.positional_embedding
    want = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask))
    torch.testing.assert_close(feats, want)
    assert enc.spec()["state_dict"] is None                        # weights stay in their file


def _save_tiny_t5(path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel
    words = ["<pad>", "</s>", "<unk>", "a", "over", "background", *COLOURS]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(words), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    T5EncoderModel(config).save_pretrained(path)


def test_transformers_t5_encoder_from_a_local_directory(tmp_path):
    _save_tiny_t5(tmp_path / "t5")
    enc = TextEncoder(TextConfig(kind="hf", checkpoint=str(tmp_path / "t5"), max_length=8))
    feats, mask = enc.encode(["a blue background", "over a green background"])
    assert enc.dim == 16 and feats.shape == (2, 8, 16)
    assert mask.sum(1).tolist() == [4, 5]                          # words + </s>
    null, null_mask = enc.null()
    assert null.shape == (1, 16) and bool(null_mask.all())          # just </s>
    assert not torch.allclose(enc.encode_one("a blue background"), enc.encode_one("a green background"))


def test_bad_configs_fail_early():
    with pytest.raises(ValueError, match="kind"):
        TextConfig(kind="bert")
    with pytest.raises(ValueError, match="checkpoint"):
        TextConfig(kind="hf")
