"""Reading the built-in models' rendered datasets (``scripts/make_dataset.py``) and their latents.

Images: ``DATA/SPLIT/shard_*.npz`` (uint8 [n, T, 64, 64, 4]). Latents: ``DATA/latents/SPLIT/shard_*.npz``
(float16 [n, T, 4, 16, 16] plus the cameras and the autoencoder's latent-space id), one per image
shard, written by ``scripts/train.py encode`` (which only encodes shards not encoded yet).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


def shards(data: str | Path, split: str) -> list[Path]:
    """Finished shards of a split, in order."""
    return sorted(p for p in (Path(data) / split).glob("shard_*.npz") if not p.name.endswith(".tmp.npz"))


def load_split(data: str | Path, split: str, limit: int | None = None, rgb_only: bool = False) -> dict:
    """All finished shards of a split: images uint8 [N, T, H, W, 4 or 3], azimuth_deg/elevation_deg
    [N, T], index [N]. Eval items are [N, V, F, H, W, 4] with cameras [N, V]."""
    files = shards(data, split)
    if not files:
        raise FileNotFoundError(f"no rendered shards for split {split!r} under {Path(data) / split}; "
                                f"render them with scripts/make_dataset.py --split {split}")
    out: dict[str, list] = {"images": [], "azimuth_deg": [], "elevation_deg": [], "index": [], "motion": []}
    n = 0
    for f in files:
        with np.load(f) as d:
            imgs = d["images"]
            if rgb_only:
                imgs = imgs[..., :3]
            out["images"].append(imgs)
            for k in ("azimuth_deg", "elevation_deg", "index", "motion"):
                out[k].append(d[k])
        n += len(out["index"][-1])
        if limit is not None and n >= limit:
            break
    res = {k: np.concatenate(v) for k, v in out.items()}
    if limit is not None:
        res = {k: v[:limit] for k, v in res.items()}
    return res


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [..., H, W, >=3] -> float32 [..., 3, H, W] in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(images[..., :3])).float().div_(127.5).sub_(1.0)
    return t.movedim(-1, -3)


def latents_dir(data: str | Path, split: str) -> Path:
    return Path(data) / "latents" / split


def latent_shard_path(data: str | Path, split: str, shard: Path) -> Path:
    return latents_dir(data, split) / (shard.stem + ".npz")


def save_latent_shard(path: Path, latents: torch.Tensor, meta: dict, latent_space: str) -> None:
    """One encoded shard: float16 latents [n, T, C, h, w] with its cameras and the latent-space id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, latents=latents.to(torch.float16).numpy(), azimuth_deg=meta["azimuth_deg"],
             elevation_deg=meta["elevation_deg"], index=meta["index"], latent_space=np.asarray(latent_space))
    tmp.rename(path)


def latent_space_of(path: Path) -> str:
    with np.load(path) as d:
        return str(d["latent_space"])


def load_latents(data: str | Path, split: str, latent_space: str | None = None) -> dict:
    """All encoded shards of a split: {'latents': float16 tensor [N, T, C, h, w], 'azimuth_deg',
    'elevation_deg', 'index', 'latent_space'}. Shards of another latent space are refused."""
    files = sorted(p for p in latents_dir(data, split).glob("shard_*.npz") if not p.name.endswith(".tmp.npz"))
    if not files:
        raise FileNotFoundError(f"no latents under {latents_dir(data, split)}: run scripts/train.py encode first")
    parts: dict[str, list] = {"latents": [], "azimuth_deg": [], "elevation_deg": [], "index": []}
    spaces = set()
    for f in files:
        with np.load(f) as d:
            for k in parts:
                parts[k].append(d[k])
            spaces.add(str(d["latent_space"]))
    if len(spaces) != 1:
        raise ValueError(f"{latents_dir(data, split)} mixes latent spaces {sorted(spaces)}: re-encode with --force")
    space = spaces.pop()
    if latent_space is not None and space != latent_space:
        raise ValueError(f"{latents_dir(data, split)} was encoded with {space}, expected {latent_space}: re-encode")
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out["latents"] = torch.from_numpy(out["latents"])
    out["latent_space"] = space
    return out


def relative_azimuth_rad(azimuth_deg: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Absolute azimuths [..., V] -> radians relative to view 0, in [0, 2 pi)."""
    a = torch.as_tensor(np.asarray(azimuth_deg), dtype=torch.float64)
    rel = torch.remainder(a - a[..., :1], 360.0)
    return torch.deg2rad(rel).float()


def write_json(path: str | Path, obj) -> None:
    Path(path).write_text(json.dumps(obj, indent=1))
