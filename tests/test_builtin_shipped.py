"""The SHIPPED built-in weights (backend/models/builtin/weights/): they load with no arguments, stay within
the size budget, carry their cards, and are trained (every check below fails with random networks)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from backend.models.builtin import WEIGHTS_DIR, load_builtin
from backend.models.builtin.metrics import psnr, to_unit
from backend.models.builtin.weights_io import FILES, read_metadata

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def shipped():
    return load_builtin()  # no options: the shipped weights, or MissingWeights (never random)


def test_shipped_weights_load_with_no_arguments_and_fit_the_budget(shipped):
    assert shipped.info["weights"] == str(WEIGHTS_DIR)
    files = [WEIGHTS_DIR / f for f in FILES.values()]
    assert sum(f.stat().st_size for f in files) <= 40e6
    for kind, card in (("autoencoder", "AUTOENCODER.md"), ("video", "VIDEO.md"), ("multiview", "MULTIVIEW.md")):
        meta = read_metadata(WEIGHTS_DIR / FILES[kind])
        assert int(meta["step"]) >= 1000, f"{kind}: only {meta['step']} training steps"
        text = (WEIGHTS_DIR / card).read_text()
        assert meta["command"] in text and "Learning curve" in text
    assert shipped.limits.views == (8,) and shipped.limits.frames == (8,) and shipped.limits.resolution == 64


def test_shipped_architecture_is_what_untrained_builds(shipped):
    """load_builtin(untrained=True) stands in for the shipped models in plumbing tests: same networks
    (guidance aside, which export sets)."""
    from dataclasses import replace

    from backend.models.builtin import default_configs

    cfgs = default_configs()
    for kind, den in (("video", shipped.video), ("multiview", shipped.multiview)):
        assert replace(den.net.cfg, guidance=1.0) == replace(cfgs[kind], guidance=1.0), kind
    assert shipped.multiview.net.lift is not None


def _drawing() -> torch.Tensor:
    """A flat-shaded drawing on white, [1, 3, 64, 64] in [0, 1] (a box and a disc, not a training render)."""
    img = torch.ones(1, 3, 64, 64)
    img[:, :, 20:44, 24:40] = torch.tensor([0.8, 0.2, 0.2]).view(1, 3, 1, 1)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    img[0][:, ((yy - 16) ** 2 + (xx - 32) ** 2) < 49] = torch.tensor([0.2, 0.4, 0.7]).view(3, 1)
    return img


def test_shipped_autoencoder_reconstructs_a_drawing(shipped):
    img = _drawing()
    rec = to_unit(shipped.autoencoder.decode(shipped.autoencoder.encode(img * 2 - 1)))
    assert psnr(rec, img).item() > 25.0  # random networks: ~6 dB


@pytest.mark.blender
def test_shipped_models_on_a_rendered_held_out_object(tmp_path, shipped):
    """One synchronized multi-view video of a procedural object (the eval split's first, never trained on):
    the autoencoder reconstructs it (>= 30 dB, the issue's target) and both denoisers' x0 at sigma = 1 is far
    closer to the truth than the skip connection alone (what a network with no knowledge returns)."""
    pytest.importorskip("bpy")
    sys.path.insert(0, str(SCRIPTS))
    import builtin_data as D
    import make_dataset as M

    assert M.main(["--split", "eval", "--count", "1", "--out", str(tmp_path), "--shard-size", "4"]) == 0
    ev = D.load_split(tmp_path, "eval")
    imgs = D.images_to_tensor(ev["images"])[0]  # [V, F, 3, 64, 64] in [-1, 1]
    V, F = imgs.shape[:2]
    ae = shipped.autoencoder
    lat = ae.encode(imgs.reshape(-1, 3, 64, 64))
    rec = ae.decode(lat)
    assert psnr(to_unit(rec), to_unit(imgs.reshape(-1, 3, 64, 64))).mean().item() >= 30.0
    lat = lat.view(V, F, *lat.shape[1:])

    sigma = 1.0
    g = torch.Generator().manual_seed(0)
    col = lat[:, 4][None]  # the orbit at frame 4: [1, V, C, h, w]
    row = lat[3][None]  # view 3's clip: [1, F, C, h, w]
    el = torch.deg2rad(torch.as_tensor(ev["elevation_deg"][0], dtype=torch.float32))
    az = D.relative_azimuth_rad(ev["azimuth_deg"][0])
    cases = ((shipped.multiview, col, shipped.multiview_cond(lat[0, 4], el, az)),
             (shipped.video, row, shipped.video_cond(lat[3, 0])))
    for model, x0, cond in cases:
        x = x0 + sigma * torch.randn(x0.shape, generator=g)
        err = (model.denoise(x, torch.tensor([sigma]), [cond]) - x0).pow(2).mean().item()
        skip_only = (x / (1 + sigma**2) - x0).pow(2).mean().item()
        assert err < 0.5 * skip_only, f"{model.name}: x0 error {err:.3f} vs skip connection alone {skip_only:.3f}"
