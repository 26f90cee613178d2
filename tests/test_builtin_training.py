"""The metrics and the whole training CLI (autoencoder -> encode -> denoisers -> export -> load) on a toy dataset."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.models.builtin import load_builtin
from backend.models.builtin.metrics import iou, masked_psnr, psnr, silhouette

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_metrics_on_known_images():
    white = torch.ones(1, 3, 8, 8)
    a = white.clone()
    a[..., 2:6, 2:6] = 0.2  # 16-pixel square
    b = white.clone()
    b[..., 2:6, 4:8] = 0.2  # shifted by two: overlap 8, union 24
    assert silhouette(a).sum() == 16
    assert iou(silhouette(a), silhouette(b)).item() == pytest.approx(8 / 24)
    assert iou(silhouette(white), silhouette(white)).item() == 1.0
    assert masked_psnr(a, a).item() > 90
    # masked PSNR counts only the union of silhouettes: 16 wrong pixels (0.8 off) out of 24
    assert masked_psnr(a, b).item() == pytest.approx(10 * np.log10(1 / (0.64 * 16 / 24)), rel=1e-6)
    # whole-image PSNR is flattered by the white background; masked PSNR is not
    assert psnr(a, b).item() > masked_psnr(a, b).item()


def _toy_split(root: Path, split: str, n: int, T: int = 8, rng=None) -> None:
    """Blobs of colour on white, in make_dataset.py's shard format."""
    rng = rng or np.random.default_rng(0)
    imgs = np.full((n, T, 64, 64, 4), 255, np.uint8)
    imgs[..., 3] = 0
    for i in range(n):
        col = rng.integers(30, 200, 3)
        for t in range(T):
            x, y = 20 + t + i % 5, 18 + (i * 3) % 9
            imgs[i, t, y:y + 24, x:x + 16, :3] = col
            imgs[i, t, y:y + 24, x:x + 16, 3] = 255
    az = np.stack([(rng.uniform(0, 360) + 45.0 * np.arange(T)) % 360 for _ in range(n)])
    el = np.full((n, T), 10.0)
    (root / split).mkdir(parents=True)
    np.savez_compressed(root / split / "shard_00000.npz", images=imgs, azimuth_deg=az, elevation_deg=el,
                        index=np.arange(n), motion=np.asarray(["toy"] * n))


def test_training_cli_end_to_end_on_a_toy_dataset(tmp_path):
    import train

    data, runs = tmp_path / "data", tmp_path / "runs"
    rng = np.random.default_rng(0)
    for split in ("video", "multiview", "val-video", "val-multiview"):
        _toy_split(data, split, 6, rng=rng)
    small = ["--channels", "32,64,64", "--blocks", "1", "--batch", "2", "--val-items", "2", "--val-samples", "2",
             "--eval-steps", "2", "--steps", "2", "--minutes", "10"]
    train.main(["autoencoder", "--data", str(data), "--run", str(runs / "ae"), "--steps", "2", "--batch", "4",
                "--minutes", "10"])
    ae_file = runs / "ae" / "autoencoder.safetensors"
    assert ae_file.is_file()
    train.main(["encode", "--data", str(data), "--ae", str(ae_file), "--splits", "video,multiview,val-video,val-multiview"])
    import builtin_data

    lat = builtin_data.load_latents(data, "multiview")
    assert lat["latents"].shape == (6, 8, 4, 16, 16) and lat["latent_space"] in ae_file.read_bytes().decode("latin-1")
    for kind in ("multiview", "video"):
        train.main([kind, "--data", str(data), "--run", str(runs / kind), "--ae", str(ae_file), *small])
    log = [json.loads(line) for line in (runs / "video" / "log.jsonl").read_text().splitlines()]
    evals = [r for r in log if r["kind"] == "eval"]
    assert evals and "iou" in evals[-1] and "motion_ratio" in evals[-1] and evals[-1]["step"] == 2
    assert list((runs / "multiview").glob("samples_*.png"))
    # resuming a finished run trains no further
    train.main(["multiview", "--data", str(data), "--run", str(runs / "multiview"), "--ae", str(ae_file), *small])
    ck = torch.load(runs / "multiview" / "ckpt.pt", weights_only=False)
    assert ck["step"] == 2
    # the multi-view model with the 3-D prior, warm-started from the plain run (lift trained alone for a step)
    train.main(["multiview", "--data", str(data), "--run", str(runs / "mv_lift"), "--ae", str(ae_file), *small,
                "--lift", "--lift-warmup", "1", "--init", str(runs / "multiview" / "multiview.safetensors")])
    log = [json.loads(line) for line in (runs / "mv_lift" / "log.jsonl").read_text().splitlines()]
    assert [r for r in log if r["kind"] == "eval"][-1]["step"] == 2
    out = tmp_path / "weights"
    train.main(["export", "--ae", str(runs / "ae"), "--video", str(runs / "video"), "--multiview", str(runs / "mv_lift"),
                "--out", str(out), "--guidance-multiview", "1.5"])
    ms = load_builtin(checkpoints=str(out))
    assert ms.multiview.guidance == 1.5 and ms.video.guidance == 1.0
    assert ms.multiview.net.lift is not None and ms.multiview.net.cfg.unet.cond_channels == ms.multiview.net.cfg.lift.channels
    assert ms.info["steps"] == {"autoencoder": "2", "video": "2", "multiview": "2"}
    assert ms.video.net.cfg.unet.channels == (32, 64, 64)
    x = ms.autoencoder.encode(torch.zeros(1, 3, 64, 64))
    assert x.shape == (1, 4, 16, 16)
