"""A clip's DiT output and loss do not depend on what it is packed with (no leaks anywhere)."""

import pytest
import torch

from generator.attention import available_backends, backend_unavailable_reason, get_attention
from generator.flow import FlowConfig, RectifiedFlow
from generator.packing import Clip, collate, drop_tokens, pack_clips, unpack
from generator.registry import create_model, list_models

PATCH = (1, 2, 2)
CPU_BACKENDS = [b for b in ("sdpa_loop", "flex") if b in available_backends()]


def random_model(backend: str = "sdpa_loop", seed: int = 0) -> torch.nn.Module:
    """Tiny DiT with all weights random, so that every path (gates, cross-attn) is live."""
    torch.manual_seed(seed)
    model = create_model("dit_tiny", attn_backend=backend).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model


def make_clips(seed: int = 0) -> list[Clip]:
    """A target clip plus three others of different sizes, one an image, different caption lengths."""
    g = torch.Generator().manual_seed(seed)
    specs = [((3, 6, 10), 4, 0.7), ((1, 12, 8), 6, 0.2), ((5, 4, 6), 2, 0.5), ((2, 9, 7), 5, 0.9)]
    return [Clip.from_latent(torch.randn(4, *shape, generator=g), PATCH, torch.randn(L, 32, generator=g),
                             t=t, key=f"c{i}") for i, (shape, L, t) in enumerate(specs)]


def outputs_by_key(model, batch):
    with torch.no_grad():
        y = model(batch.x, batch.t, batch)
    assert y[batch.n_real:].abs().sum() == 0                          # padding stays zero
    return dict(zip(batch.keys, unpack(batch, y)))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_clip_output_is_the_same_alone_or_packed(backend):
    model, clips = random_model(backend), make_clips()
    alone = {c.key: outputs_by_key(model, collate([c]))[c.key] for c in clips}
    for order in ([0, 1, 2, 3], [2, 0, 3, 1], [3, 1, 0]):
        packed = outputs_by_key(model, collate([clips[i] for i in order], token_budget=200))
        for key, y in packed.items():
            assert y.abs().max() > 1e-3                                # a non-trivial output
            torch.testing.assert_close(y, alone[key], atol=1e-5, rtol=1e-5)


def test_backends_agree():
    if "flex" not in CPU_BACKENDS:
        pytest.skip(backend_unavailable_reason("flex"))
    batch = pack_clips(make_clips(), 200)[0]
    y_loop = outputs_by_key(random_model("sdpa_loop"), batch)
    y_flex = outputs_by_key(random_model("flex"), batch)
    for key in y_loop:
        torch.testing.assert_close(y_flex[key], y_loop[key], atol=1e-5, rtol=1e-5)


def test_no_gradient_flows_between_packed_clips():
    model, clips = random_model(), make_clips()
    batch = collate(clips, token_budget=200)
    x = batch.x.clone().requires_grad_()
    text = batch.text.clone().requires_grad_()
    y = model(x, batch.t, batch.replace(text=text))
    y[: batch.seqlens[0]].sum().backward()                            # depends on clip 0 only
    first = batch.segment_ids == 0
    assert x.grad[first].abs().sum() > 0 and x.grad[~first].abs().sum() == 0
    assert text.grad[0].abs().sum() > 0 and text.grad[1:].abs().sum() == 0


def test_packed_loss_is_the_mean_of_per_clip_losses_alone():
    model, clips = random_model(), make_clips()
    clips[1].loss_weight = 3.0
    flow = RectifiedFlow(FlowConfig())
    g = torch.Generator().manual_seed(1)
    noise = {c.key: torch.randn(c.tokens.shape, generator=g) for c in clips}
    with torch.no_grad():
        alone = [flow.loss(model, collate([c]), noise=noise[c.key]).loss for c in clips]
        batch = collate(clips, token_budget=200)
        eps = torch.cat([noise[k] for k in batch.keys] + [torch.zeros(200 - batch.n_real, 16)])
        packed = flow.loss(model, batch, noise=eps)
    torch.testing.assert_close(packed.per_clip, torch.stack(alone), atol=1e-5, rtol=1e-5)
    weights = torch.tensor([1.0, 3.0, 1.0, 1.0])
    torch.testing.assert_close(packed.loss, (weights * torch.stack(alone)).sum() / weights.sum())


def test_dropped_tokens_clip_is_also_exact():
    model, clips = random_model(), make_clips()
    clips[0] = drop_tokens(clips[0], 0.5, torch.Generator().manual_seed(0))
    alone = outputs_by_key(model, collate([clips[0]]))["c0"]
    packed = outputs_by_key(model, collate(clips, token_budget=200))["c0"]
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)


def test_fresh_model_is_zero_at_init_adaln_zero():
    model = create_model("dit_tiny")
    batch = collate(make_clips())
    y = model(batch.x, batch.t, batch)
    assert y.abs().max() == 0
    for block in model.blocks:
        assert block.adaLN_modulation[-1].weight.abs().sum() == 0


def test_registry_builds_every_named_config():
    assert {"dit_tiny", "dit_S", "dit_B", "dit_L", "dit_XL"} <= set(list_models())
    with torch.device("meta"):
        xl = create_model("dit_XL", text_dim=4096)
    assert xl.config.hidden_size == 1152 and len(xl.blocks) == 28 and xl.config.text_dim == 4096
    assert xl.config_dict()["family"] == "dit"
    with pytest.raises(ValueError, match="unknown DiT config fields"):
        create_model("dit_tiny", widht=3)
    with pytest.raises(ValueError, match="attn_backend"):
        create_model("dit_tiny", attn_backend="nope")


def test_flash_varlen_without_flash_attn_says_why():
    reason = backend_unavailable_reason("flash_varlen")
    if reason is None:
        pytest.skip("flash-attn is available here")
    with pytest.raises(RuntimeError, match="flash"):
        get_attention("flash_varlen")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["flex", "flash_varlen"])
def test_gpu_backends_match_sdpa_loop(backend):
    if not torch.cuda.is_available() or backend_unavailable_reason(backend):
        pytest.skip(backend_unavailable_reason(backend) or "no CUDA GPU")
    batch = pack_clips(make_clips(), 200)[0].to("cuda")
    ref = random_model("sdpa_loop").cuda()
    model = random_model(backend).cuda()
    x = batch.x.clone().requires_grad_()
    y, y_ref = model(x, batch.t, batch), ref(batch.x, batch.t, batch)
    tol = 3e-2 if backend == "flash_varlen" else 1e-4                 # flash runs in bf16
    torch.testing.assert_close(y, y_ref, atol=tol, rtol=tol)
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
