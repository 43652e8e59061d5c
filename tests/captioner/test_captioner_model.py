"""The captioner model: forward shapes, loss only on caption tokens, time embeddings, tokenizer."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from captioner.captioner_model import IGNORE, VideoCaptioner, caption_labels, object_crops
from captioner.registry import list_configs, load_config
from captioner.tokenizer import CaptionTokenizer, train_bpe

from .conftest import micro_config

CAPTIONS = ["A large red circle moves left over a blue background; the camera pans right.",
            "A small green star spins in place and a medium white square grows over a gray "
            "background; the camera is static."]


@pytest.fixture(scope="module")
def model() -> VideoCaptioner:
    torch.manual_seed(0)
    return VideoCaptioner(micro_config(), vocab_size=300).eval()


def _frames(b: int, model: VideoCaptioner) -> torch.Tensor:
    return torch.randint(0, 256, (b, model.n_frames, 3, *model.image_size), dtype=torch.uint8)


@pytest.fixture(scope="module")
def tiny_resnet() -> VideoCaptioner:
    torch.manual_seed(0)
    return VideoCaptioner(load_config("tiny"), vocab_size=300).eval()


@pytest.mark.parametrize("which", ["model", "tiny_resnet"])
def test_forward_shapes(which, request):
    """Both tower kinds: a ViT (patch tokens) and CLIP's ResNet (a feature-map grid)."""
    model = request.getfixturevalue(which)
    b, t = 3, 7
    frames = _frames(b, model)
    ids = torch.randint(3, 300, (b, t))
    prefix = model.encode_video(frames)
    q, d = model.prefix_len, model.lm.get_input_embeddings().embedding_dim
    assert prefix.shape == (b, q, d)
    loss, logits = model(frames, ids, torch.ones_like(ids))
    assert logits.shape == (b, q + t, 300)
    assert loss.ndim == 0 and torch.isfinite(loss)
    out = model.generate(frames, bos_id=0, eos_id=1, max_new_tokens=5)
    assert out.shape[0] == b and 1 <= out.shape[1] <= 5


@pytest.mark.parametrize("vision_input", ["rgb", "silhouette_motion", "rgb_silhouette_motion"])
def test_every_tower_input_builds_and_encodes(vision_input):
    config = load_config("tiny", vision={"input": vision_input, "frames": 3,
                                         "crop_colour": vision_input != "rgb_silhouette_motion"},
                         resampler={"camera_shift": 0 if vision_input == "rgb" else 4})
    model = VideoCaptioner(config, vocab_size=300).eval()
    prefix = model.encode_video(_frames(2, model))
    assert prefix.shape == (2, model.prefix_len, model.lm.get_input_embeddings().embedding_dim)
    assert torch.isfinite(prefix).all()


def test_object_crops_find_the_object_and_fill_the_view():
    """A small square on a textured backdrop: the crop is centred on it and the square spans
    1/1.7 of the crop's side (margin 0.35 of it each side); a frame with nothing on it gives the
    whole frame."""
    g = torch.Generator().manual_seed(0)
    frames = 0.5 + 0.03 * torch.randn(2, 3, 96, 96, generator=g)  # grey, faint texture
    frames[0, :, 60:72, 12:24] = torch.tensor([1.0, 0.1, 0.1])[:, None, None]  # red 12-px square
    crops, box, colours = object_crops(frames.clamp(0, 1), (32, 32))
    assert crops.shape == (2, 1, 3, 32, 32) and box.shape == (2, 5)
    crops = crops[:, 0]
    cx, cy = box[0, 0].item(), box[0, 1].item()
    assert abs(cx - (18 / 48 - 1)) < 0.05 and abs(cy - (66 / 48 - 1)) < 0.05  # centre of the square
    red = (crops[0, 0] > 0.8) & (crops[0, 1] < 0.3)  # (32, 32)
    assert 0.25 < red.float().mean() < 0.4  # (1 / 1.7) ** 2 ≈ 0.35 of the crop's area
    assert red[16, 16]  # … and in the middle of it
    assert box[1, :3].tolist() == [0.0, 0.0, 1.0]  # nothing salient: the whole frame
    assert colours.shape == (2, 2, 3)  # the object's colour, the frame's median
    assert torch.allclose(colours[0, 0], torch.tensor([1.0, 0.1, 0.1]), atol=0.03)
    assert torch.allclose(colours[0, 1], torch.full((3,), 0.5), atol=0.03)
    assert torch.equal(colours[1, 0], colours[1, 1])  # no object: its colour is the median


def test_object_scale_does_not_depend_on_the_aspect_ratio_the_frame_was_squashed_from():
    """The same 24-px disc in a 192 × 108 (16:9), a 144 × 144 and a 108 × 192 frame, each
    squashed to 96 × 96 as the captioner's decoder does: the crop side follows the aspect ratio,
    the scale feature (log2 of √(w/W · h/H) / 0.2) does not and reads the disc's true size."""
    def squashed(width: int, height: int) -> torch.Tensor:
        y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        disc = ((x - width / 2) ** 2 + (y - height / 2) ** 2 < 12 ** 2).float()
        frame = 0.5 + 0.4 * disc[None].repeat(3, 1, 1)  # (3, H, W)
        return torch.nn.functional.interpolate(frame[None], size=(96, 96), mode="area")

    _, box, _ = object_crops(torch.cat([squashed(192, 108), squashed(144, 144), squashed(108, 192)]),
                             (32, 32))
    sides, scales = box[:, 2], box[:, 4]
    assert sides.max() - sides.min() > 0.15  # the side is the larger of the squashed extents
    true = math.log2(24 / math.sqrt(192 * 108) / 0.2)
    assert (scales - true).abs().max() < 0.12 and scales.max() - scales.min() < 0.1


def test_two_object_crops_split_at_the_gap_between_objects():
    """``max_objects`` 2: a red square on the left and a blue one on the right get a crop
    each, in that order; one object alone fills both crops and the split flag says so."""
    g = torch.Generator().manual_seed(0)
    frames = 0.5 + 0.03 * torch.randn(2, 3, 96, 96, generator=g)
    frames[:, :, 60:72, 12:24] = torch.tensor([1.0, 0.1, 0.1])[:, None, None]  # red, left
    frames[0, :, 20:36, 70:86] = torch.tensor([0.1, 0.1, 1.0])[:, None, None]  # blue, right
    crops, box, colours = object_crops(frames.clamp(0, 1), (32, 32), objects=2)
    assert crops.shape == (2, 2, 3, 32, 32) and box.shape == (2, 11)
    assert box[0, 10] == 1.0 and box[1, 10] == -1.0  # split / not split
    red, blue = crops[0, 0, 0].mean(), crops[0, 1, 2].mean()
    assert crops[0, 0, 0, 16, 16] > 0.8 and crops[0, 1, 2, 16, 16] > 0.8  # each centred on its own
    assert crops[0, 0, 2].max() < 0.7 and crops[0, 1, 0].max() < 0.7  # … and not on the other
    assert red > 0.5 and blue > 0.5
    assert abs(box[0, 0] - (18 / 48 - 1)) < 0.05 and abs(box[0, 5] - (78 / 48 - 1)) < 0.05
    assert torch.equal(crops[1, 0], crops[1, 1]) and torch.equal(box[1, :5], box[1, 5:10])
    assert torch.allclose(colours[0, 0], torch.tensor([1.0, 0.1, 0.1]), atol=0.03)  # red, then
    assert torch.allclose(colours[0, 1], torch.tensor([0.1, 0.1, 1.0]), atol=0.03)  # blue


def test_object_crop_views_reach_the_resampler():
    config = load_config("tiny", vision={"frames": 3, "object_crops": 96})
    model = VideoCaptioner(config, vocab_size=300).eval()
    frames = _frames(2, model)
    with pytest.raises(AssertionError, match="vs"):  # it takes 96-px frames, not the tower's 64
        model.encode_video(torch.zeros(2, 3, 3, 64, 64, dtype=torch.uint8))
    prefix = model.encode_video(frames)
    assert prefix.shape == (2, model.prefix_len, model.lm.get_input_embeddings().embedding_dim)
    moved = frames.clone()
    moved[:, :, :, :48] = frames[:, :, :, 48:]  # different content: a different prefix
    assert not torch.allclose(prefix, model.encode_video(moved))


def test_loss_is_only_on_caption_tokens(model):
    frames = _frames(2, model)
    ids = torch.tensor([[0, 10, 11, 12, 1, 2, 2], [0, 20, 21, 1, 2, 2, 2]])  # bos … eos pad
    mask = (torch.arange(7) < torch.tensor([[5], [4]])).long()
    labels = caption_labels(ids, mask, prefix_len=4)
    assert (labels[:, :5] == IGNORE).all()  # prefix and bos
    assert labels[0, 5:].tolist() == [10, 11, 12, 1, IGNORE, IGNORE]
    assert labels[1, 5:].tolist() == [20, 21, 1, IGNORE, IGNORE, IGNORE]
    loss, logits = model(frames, ids, mask)
    q = model.prefix_len
    manual = F.cross_entropy(torch.cat([logits[0, q:q + 4], logits[1, q:q + 3]]),
                             torch.tensor([10, 11, 12, 1, 20, 21, 1]))
    assert torch.allclose(loss, manual, atol=1e-5)
    ids_other_pad = ids.masked_fill(mask == 0, 123)  # padding content must not matter
    assert torch.allclose(model(frames, ids_other_pad, mask)[0], loss, atol=1e-6)


def test_time_embeddings_make_frame_order_visible(model):
    assert model.resampler.time_embed.abs().sum() > 0
    frames = _frames(1, model)
    forward = model.encode_video(frames)
    backward = model.encode_video(frames.flip(1))
    assert not torch.allclose(forward, backward, atol=1e-4)


def test_tokenizer_round_trip_and_persistence():
    tok = train_bpe(CAPTIONS * 5, vocab_size=300)
    for text in CAPTIONS + ["Ünïcode, digits 123 and  double  spaces!", ""]:
        assert tok.decode(tok.encode(text)) == text
    ids = tok.caption_ids(CAPTIONS[0], max_len=64)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert len(tok.caption_ids(CAPTIONS[1], max_len=8)) == 8
    again = CaptionTokenizer.from_dict(tok.to_dict())
    assert again.encode(CAPTIONS[1]) == tok.encode(CAPTIONS[1])
    assert (again.bos_id, again.eos_id, again.pad_id) == (tok.bos_id, tok.eos_id, tok.pad_id)


def test_named_configs_validate_and_bad_ones_say_what_to_fix():
    assert {"tiny", "base"} <= set(list_configs())
    assert load_config("tiny").vision.frames >= 3  # enough frames for motion to show
    assert load_config("base").tokenizer.kind == "lm"
    with pytest.raises(ValueError, match="open_clip_cfg"):
        load_config("tiny", vision={"open_clip_cfg": None})
    with pytest.raises(ValueError, match="unknown captioner config"):
        load_config("nope")
    with pytest.raises(ValueError, match="vision.pooled_tokens"):
        load_config("tiny", vision={"pooled_tokens": False, "word_head": 1.0})
    with pytest.raises(ValueError, match="rgb_silhouette"):
        load_config("tiny", vision={"input": "rgb", "crop_colour": False})
    with pytest.raises(ValueError, match="max_objects"):
        load_config("tiny", vision={"max_objects": 3})


def _moving_square(k: int, size: int, colour: tuple[float, float, float], step: int) -> torch.Tensor:
    """(1, k, 3, size, size) uint8: a 16-px square moving ``step`` px per frame over grey."""
    frames = torch.full((1, k, 3, size, size), 128, dtype=torch.uint8)
    for t in range(k):
        x = size // 2 - 8 + step * (t - k // 2)
        frames[0, t, :, 40:56, x:x + 16] = (torch.tensor(colour) * 255).to(torch.uint8)[:, None, None]
    return frames


@pytest.mark.parametrize("crop_tokens", [True, False])
def test_pooled_track_and_colour_tokens_join_the_prefix(crop_tokens):
    """``vision.pooled_tokens`` adds one token per object crop per frame from the whole ResNet
    tower, ``resampler.track_token`` one from the clip's boxes and camera curves,
    ``colour_token`` one from its measured colours. With ``crop_colour`` off the pooled and
    track tokens follow the object's silhouette and path, not its colour; the colour token and
    the resampler's tokens see colour (with or without crop tokens in the resampler)."""
    config = load_config("tiny", vision={"frames": 3, "object_crops": 96, "max_objects": 2,
                                         "crop_colour": False, "pooled_tokens": True,
                                         "word_head": 1.0},
                         resampler={"track_token": True, "colour_token": True,
                                    "object_tokens": False, "crop_tokens": crop_tokens})
    torch.manual_seed(0)
    model = VideoCaptioner(config, vocab_size=300).eval()
    q = config.resampler.queries
    assert model.prefix_len == q + 2 * 3 + 2
    left = _moving_square(3, 96, (1.0, 0.1, 0.1), step=-12)
    prefix = model.encode_video(left)
    assert prefix.shape == (1, model.prefix_len, model.lm.get_input_embeddings().embedding_dim)
    recoloured = model.encode_video(_moving_square(3, 96, (0.1, 0.1, 1.0), step=-12))
    right = model.encode_video(_moving_square(3, 96, (1.0, 0.1, 0.1), step=12))
    assert torch.allclose(prefix[:, q:-1], recoloured[:, q:-1], atol=1e-5)  # silhouette and path
    assert not torch.allclose(prefix[:, :q], recoloured[:, :q], atol=1e-3)  # colour still seen
    assert not torch.allclose(prefix[:, -1], recoloured[:, -1], atol=1e-3)  # … and measured
    assert not torch.allclose(prefix[:, -2], right[:, -2], atol=1e-3)  # other direction
    model.train()
    ids = torch.randint(3, 300, (1, 6))
    model(left, ids, torch.ones_like(ids))[0].backward()
    deep = model.frame_encoder.tower.layer4  # runs only for the pooled tokens; they train it
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in deep.parameters())
    for mlp in (model.track_mlp, model.colour_token_mlp, model.word_head):
        assert next(mlp.parameters()).grad.abs().sum() > 0  # each new path trains


def _two_squares(k: int, right_colour: tuple[float, float, float], right_step: int) -> torch.Tensor:
    """(1, k, 3, 96, 96) uint8: a red square moving down on the left, a second one on the right
    (``right_colour``, moving ``right_step`` px per frame to the right), over grey."""
    frames = torch.full((1, k, 3, 96, 96), 128, dtype=torch.uint8)
    for t in range(k):
        y, x = 20 + 4 * t, 56 + right_step * t
        frames[0, t, :, y:y + 12, 8:20] = torch.tensor([255, 25, 25], dtype=torch.uint8)[:, None, None]
        frames[0, t, :, 40:52, x:x + 12] = (torch.tensor(right_colour) * 255).to(torch.uint8)[:, None, None]
    return frames


def test_object_tokens_keep_each_object_to_its_own_token():
    """``resampler.object_tokens``: one token per object crop, one for the scene. Changing the
    right object's colour or motion changes its token and leaves the left object's token as it
    was: nothing of one object leaks into the other's token (what the LM binds a caption's first
    and second object to). The tokens replace the track and colour tokens, and need crops."""
    config = load_config("tiny", vision={"frames": 3, "object_crops": 96, "max_objects": 2,
                                         "crop_colour": False, "pooled_tokens": True},
                         resampler={"object_tokens": True, "track_token": False,
                                    "colour_token": False})
    torch.manual_seed(0)
    model = VideoCaptioner(config, vocab_size=300).eval()
    q, n = config.resampler.queries, model.prefix_len
    assert n == q + 2 * 3 + 2 + 1
    base = model.encode_video(_two_squares(3, (0.1, 0.1, 1.0), right_step=6))[0, -3:]  # (3, D)
    for other in (_two_squares(3, (0.1, 1.0, 0.1), right_step=6),  # green, not blue
                  _two_squares(3, (0.1, 0.1, 1.0), right_step=-6)):  # moving left, not right
        tokens = model.encode_video(other)[0, -3:]
        assert torch.allclose(tokens[0], base[0], atol=1e-5)  # the left object's token
        assert not torch.allclose(tokens[1], base[1], atol=1e-3)  # the right object's token
    model.train()
    ids = torch.randint(3, 300, (1, 6))
    model(_two_squares(3, (0.1, 0.1, 1.0), 6), ids, torch.ones_like(ids))[0].backward()
    for part in (model.object_tokens.object_mlp, model.object_tokens.scene_mlp,
                 model.object_tokens.colour_mlp):
        assert next(part.parameters()).grad.abs().sum() > 0
    with pytest.raises(ValueError, match="replaces track_token"):
        VideoCaptioner(load_config("tiny", resampler={"object_tokens": True, "track_token": True}),
                       vocab_size=300)
    with pytest.raises(ValueError, match="object_tokens needs"):
        VideoCaptioner(load_config("tiny", vision={"pooled_tokens": False, "word_head": 0.0},
                                   resampler={"object_tokens": True, "track_token": False,
                                              "colour_token": False, "crop_tokens": True}),
                       vocab_size=300)


def test_word_loss_counts_the_caption_tokens_that_occur():
    """The word head's targets are the caption's own tokens (not prefix, bos or padding)."""
    config = load_config("tiny", vision={"frames": 2, "object_crops": 96, "pooled_tokens": True,
                                         "word_head": 1.0})
    model = VideoCaptioner(config, vocab_size=50).eval()
    pooled = torch.zeros(1, 2, model.frame_encoder.pooled_width)
    ids = torch.tensor([[0, 10, 11, 10, 1, 2, 2]])  # bos, caption 10 11 10, eos, padding
    labels = caption_labels(ids, (ids != 2).long(), prefix_len=3)
    with torch.no_grad():
        model.word_head.weight.zero_()
        model.word_head.bias.fill_(-20.0)  # bos (0) and padding (2) are never targets
        model.word_head.bias[[10, 11, 1]] = 20.0  # confident in exactly the caption's tokens
        assert model._word_loss(pooled, labels) < 1e-6
        model.word_head.bias[11] = -20.0  # now wrong about one of its three distinct tokens
        assert abs(model._word_loss(pooled, labels).item() - 20.0 / 3) < 1e-3


def test_track_token_needs_boxes_or_camera_curves():
    config = load_config("tiny", vision={"object_crops": 0}, resampler={"camera_shift": 0,
                                                                       "track_token": True})
    with pytest.raises(ValueError, match="object_crops"):
        VideoCaptioner(config, vocab_size=300)
    with pytest.raises(ValueError, match="pooled_tokens"):
        VideoCaptioner(load_config("tiny", vision={"pooled_tokens": False, "word_head": 0.0},
                                   resampler={"crop_tokens": False}), vocab_size=300)


@pytest.mark.parametrize("token_layer", [0, 2, 4])
def test_pooled_embedding_covers_only_the_inputs_asked_for(token_layer):
    """One tower call gives tokens of every view and the pooled embedding of the later ones,
    the same (in evaluation) as running the tower on those alone."""
    from captioner.towers import FrameEncoder
    encoder = FrameEncoder(load_config("tiny", vision={"token_layer": token_layer}).vision).eval()
    x = torch.randn(6, encoder.in_channels, *encoder.image_size)
    tokens, pooled = encoder(x, pooled_from=4)
    alone_tokens, alone = encoder(x[4:], pooled_from=0)
    assert tokens.shape[0] == 6 and pooled.shape == (2, encoder.pooled_width)
    assert torch.allclose(pooled, alone, atol=1e-5) and torch.allclose(tokens[4:], alone_tokens, atol=1e-5)
    assert encoder(x, pooled_from=None)[1] is None
