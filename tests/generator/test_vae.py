"""Video autoencoders: causal VAE shapes and causality, training, pixel passthrough, diffusers."""

import importlib.util

import pytest
import torch

from generator.registry import create_model
from generator.train_vae import VAETrainConfig, train_vae
from generator.vae import CausalVAE, PixelAutoencoder, load_autoencoder

pytestmark = pytest.mark.usefixtures("one_thread")   # fast and bit-exact on a busy shared CPU

TINY = dict(channels=(8, 8, 8, 8), groups=4)


def tiny_vae(seed: int = 0) -> CausalVAE:
    torch.manual_seed(seed)
    return create_model("vae_tiny", **TINY).eval()


@pytest.mark.parametrize("frames,latent_frames", [(1, 1), (5, 2), (9, 3), (7, 3), (10, 4)])
def test_latent_frames_are_one_plus_ceil_of_the_rest_over_four(frames, latent_frames):
    vae = tiny_vae()
    assert vae.compression == (4, 8, 8)
    video = torch.rand(1, 3, frames, 24, 40) * 2 - 1
    z = vae.encode(video)
    assert z.shape == (1, 4, latent_frames, 3, 5) and vae.latent_size(frames, 24, 40) == (latent_frames, 3, 5)
    out = vae.decode(z)
    assert out.shape == (1, 3, 1 + 4 * (latent_frames - 1), 24, 40)
    assert vae.decode(z, size=(frames, 20, 37)).shape == (1, 3, frames, 20, 37)


def test_encoder_is_causal_and_an_image_is_a_one_frame_video():
    vae = tiny_vae()
    video = torch.rand(2, 3, 9, 16, 16) * 2 - 1
    with torch.no_grad():
        z = vae.encode(video)                                    # (2, 4, 3, 2, 2)
        image = vae.encode(video[:, :, :1])
        prefix = vae.encode(video[:, :, :5])
        changed_future = vae.encode(torch.cat([video[:, :, :5], -video[:, :, 5:]], dim=2))
    torch.testing.assert_close(z[:, :, :1], image, rtol=0, atol=1e-6)
    torch.testing.assert_close(z[:, :, :2], prefix, rtol=0, atol=1e-6)
    torch.testing.assert_close(changed_future[:, :, :2], z[:, :, :2], rtol=0, atol=1e-6)
    assert not torch.allclose(changed_future[:, :, 2], z[:, :, 2])


def test_vae_learns_to_reconstruct():
    vae = tiny_vae().train()
    video = torch.zeros(2, 3, 5, 16, 16)
    video[0, 0], video[1, 2] = 0.8, -0.6                         # two flat colours
    video[:, :, :, 4:10, 4:10] = 1.0                             # with a white square
    opt = torch.optim.AdamW(vae.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    first = vae(video, generator=g).losses["recon"].item()
    for _ in range(30):
        out = vae(video, generator=g)
        opt.zero_grad()
        out.losses["loss"].backward()
        opt.step()
    assert out.losses["recon"].item() < 0.5 * first             # better than its pixel-shortcut start


def test_pixel_passthrough_round_trips_block_images():
    ae = PixelAutoencoder(downsample=4)
    latent = torch.rand(1, 3, 3, 5, 6) * 2 - 1
    video = ae.decode(latent)
    assert video.shape == (1, 3, 3, 20, 24) and ae.compression == (1, 4, 4)
    torch.testing.assert_close(ae.encode(video), latent)
    assert ae.encode(torch.zeros(1, 3, 2, 21, 23)).shape == (1, 3, 2, 6, 6)     # padded, not refused
    assert load_autoencoder("pixel:4").compression == (1, 4, 4)
    assert isinstance(load_autoencoder(ae.spec()), PixelAutoencoder)


def test_train_vae_writes_a_loadable_checkpoint(root):
    result = train_vae(VAETrainConfig(root=str(root), dataset="toy", model_overrides=TINY, steps=3,
                                      batch_size=2, crop_frames=5, crop_size=16, max_pixels=32 * 32,
                                      stats_batches=1, progress=False, cpu_threads=1))
    assert result.step == 3 and result.checkpoint.is_file()
    vae = load_autoencoder(str(root / "models" / "vae"))                  # newest run via `latest`
    assert isinstance(vae, CausalVAE) and vae.config.channels == (8, 8, 8, 8)
    assert float(vae.scale) != 1.0                                         # latent stats were fitted
    z = vae.normalize(vae.encode(torch.zeros(1, 3, 5, 16, 16)))
    assert z.shape == (1, 4, 2, 2, 2)
    rebuilt = load_autoencoder(vae.spec())                                 # as a DiT checkpoint stores it
    torch.testing.assert_close(rebuilt.encode(torch.ones(1, 3, 1, 8, 8)), vae.encode(torch.ones(1, 3, 1, 8, 8)))


@pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="diffusers not installed")
@pytest.mark.parametrize("family", ["cogvideox", "wan"])
def test_diffusers_video_vae_from_a_local_directory(tmp_path, family):
    import diffusers
    torch.manual_seed(0)
    if family == "cogvideox":
        model = diffusers.AutoencoderKLCogVideoX(block_out_channels=(8, 8, 8, 8), latent_channels=4,
                                                 layers_per_block=1, norm_num_groups=4, scaling_factor=0.7)
    else:
        model = diffusers.AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                           latents_mean=[0.1, 0.2, 0.3, 0.4], latents_std=[2.0, 2.0, 4.0, 4.0])
    model.save_pretrained(tmp_path / family)
    ae = load_autoencoder(str(tmp_path / family))
    assert ae.compression == (4, 8, 8) and ae.latent_channels == 4
    with torch.no_grad():
        z = ae.encode(torch.rand(1, 3, 7, 16, 24) * 2 - 1)                # 7 frames: padded to 9
        assert z.shape == (1, 4, 3, 2, 3)
        assert ae.decode(z, size=(7, 16, 24)).shape == (1, 3, 7, 16, 24)
    if family == "wan":
        torch.testing.assert_close(ae.normalize(torch.ones(1, 4, 1, 1, 1)).flatten(), torch.tensor([0.45, 0.4, 0.175, 0.15]))
    else:
        torch.testing.assert_close(ae.normalize(torch.ones(1, 4, 1, 1, 1)), torch.full((1, 4, 1, 1, 1), 0.7))
    assert load_autoencoder(ae.spec()).compression == (4, 8, 8)
