"""Rectified flow: timesteps, caption dropout, the CFG Euler sampler, and overfitting one clip."""

import torch

from generator.flow import (
    FlowConfig, RectifiedFlow, drop_captions, guided_velocity, sample, sample_timesteps, shift_timesteps, time_grid)
from generator.packing import Clip, collate
from generator.patches import grid_size, patchify, unpatchify
from generator.registry import create_model

PATCH = (1, 2, 2)


def random_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("dit_tiny").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model


def test_timesteps_are_logit_normal_and_shift_with_resolution():
    g = torch.Generator().manual_seed(0)
    small = sample_timesteps(torch.full((4000,), 256), FlowConfig(), g)
    large = sample_timesteps(torch.full((4000,), 4096), FlowConfig(), g)
    assert 0 < small.min() and large.max() < 1
    assert abs(small.mean().item() - 0.5) < 0.02                      # no shift at base_tokens
    assert large.mean() > small.mean() + 0.2                          # more tokens -> more noise
    t = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(shift_timesteps(t, torch.tensor(1024), 256), torch.tensor([0.0, 2 / 3, 1.0]))


def test_caption_dropout_replaces_whole_captions():
    clips = [Clip(torch.randn(4, 16), grid_size(1, 4, 4, *PATCH), torch.randn(L, 32)) for L in (3, 5, 2)]
    batch = collate(clips)
    null = torch.zeros(1, 32)
    dropped = drop_captions(batch, null, p=1.0)
    assert dropped.text_mask.sum(1).tolist() == [1, 1, 1] and dropped.text.abs().sum() == 0
    kept = drop_captions(batch, null, p=0.0)
    assert torch.equal(kept.text, batch.text) and torch.equal(kept.text_mask, batch.text_mask)


def test_sampler_returns_the_requested_odd_shape():
    model = random_model()
    out = sample(model, torch.randn(2, 5, 32), None, torch.zeros(1, 32), frames=3, height=5, width=7,
                 latent_channels=4, patch=PATCH, steps=4, cfg_scale=3.0, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 4, 3, 5, 7) and torch.isfinite(out).all()


def test_cfg_scale_one_equals_the_conditional_only_path():
    model, text = random_model(), torch.randn(2, 5, 32)
    null = torch.zeros(1, 32)
    out = sample(model, text, None, null, 2, 6, 4, 4, PATCH, steps=5, cfg_scale=1.0,
                 generator=torch.Generator().manual_seed(0))
    # Reference: a hand-written conditional-only Euler loop.
    noise = torch.randn(2, 4, 2, 6, 4, generator=torch.Generator().manual_seed(0))
    grid = grid_size(2, 6, 4, *PATCH)
    batch = collate([Clip(patchify(z, *PATCH)[0], grid, text[i]) for i, z in enumerate(noise)])
    x, ts = batch.x, time_grid(5, grid.n_tokens, FlowConfig())
    with torch.no_grad():
        for t0, t1 in zip(ts[:-1], ts[1:]):
            x = x + (t1 - t0) * model(x, torch.full((2,), t0), batch)
    ref = torch.stack([unpatchify(tok, grid, *PATCH, 4, 2, 6, 4) for tok in x.split(grid.n_tokens)])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # The packed cond + uncond forward with scale 1 is the conditional velocity too.
    uncond = batch.replace(text=torch.zeros(2, 5, 32), text_mask=torch.tensor([[True] + [False] * 4] * 2))
    t = torch.full((2,), 0.7)
    with torch.no_grad():
        v1 = guided_velocity(model, batch.x, t, batch, uncond, 1.0)
        v3 = guided_velocity(model, batch.x, t, batch, uncond, 3.0)
        v_cond = model(batch.x, t, batch)
    torch.testing.assert_close(v1, v_cond, atol=1e-5, rtol=1e-5)
    assert (v3 - v_cond).abs().max() > 1e-3


def smooth_clip(g: torch.Generator) -> torch.Tensor:
    """A small latent (4, 2, 8, 8): per channel, a constant plus gradients along h and w."""
    ramp = torch.linspace(-1, 1, 8)
    a, b, c = (torch.randn(4, 1, 1, 1, generator=g) for _ in range(3))
    return (a + b * ramp[None, None, :, None] + c * ramp[None, None, None, :]).expand(4, 2, 8, 8).clone()


def test_tiny_model_overfits_one_clip_and_samples_it_back(seed=0):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                                          # tiny ops: threads only contend
    try:
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        model = create_model("dit_tiny").train()
        latent, text = smooth_clip(g), torch.randn(4, 32, generator=g)
        batch = collate([Clip.from_latent(latent, PATCH, text)])      # 2 x 4 x 4 = 32 tokens
        # 32 tokens << base_tokens: a resolution shift would put most timesteps near 0.
        flow = RectifiedFlow(FlowConfig(resolution_shift=False))
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        losses = []
        for _ in range(300):
            loss = flow.loss(model, batch, generator=g).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        first, last = sum(losses[:10]) / 10, sum(losses[-50:]) / 50
        assert last < first / 6, f"loss {first:.3f} -> {last:.3f}"
        # The sampler integrates the learned flow back to the one clip it has seen.
        out = sample(model.eval(), text[None], None, torch.zeros(1, 32), 2, 8, 8, 4, PATCH, steps=20,
                     cfg_scale=1.0, generator=torch.Generator().manual_seed(seed + 1), config=flow.config)
        rel_err = (out[0] - latent).pow(2).mean() / latent.pow(2).mean()
        assert rel_err < 0.15, f"sampled clip is off by {rel_err:.3f} (relative MSE)"
    finally:
        torch.set_num_threads(threads)
