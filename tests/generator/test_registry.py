"""The model registry: named configs build without the caller importing the family's module."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from generator.registry import build_model, create_model, list_models

REPO = Path(__file__).parents[2]


def test_vae_builds_by_name_in_a_fresh_process_without_importing_generator_vae():
    code = ("import sys\n"
            "from generator.registry import create_model\n"
            "assert 'generator.vae' not in sys.modules\n"
            "vae = create_model('vae_tiny')\n"
            "print(type(vae).__name__, vae.latent_channels, 'generator.vae' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["CausalVAE", "4", "True"]


def test_bundled_names_build_and_unknown_ones_say_what_exists():
    assert {"dit_tiny", "vae_tiny"} <= set(list_models())
    assert create_model("vae_tiny", latent_channels=8).latent_channels == 8
    with pytest.raises(ValueError, match="available"):
        create_model("nope")
    with pytest.raises(ValueError, match="registered"):
        build_model({"family": "nope"})
