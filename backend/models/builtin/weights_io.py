"""Saving and loading the built-in networks as safetensors, configuration in the file's metadata.

A weight file holds one network's tensors (float16 to keep the repo small; loaded as float32) and
metadata: ``format``, ``model`` ('autoencoder' | 'video' | 'multiview'), ``config`` (json),
``latent_space`` (the autoencoder it belongs to) and free-form training facts (``step``, ...).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from backend.models.builtin.autoencoder import AutoencoderNet
from backend.models.builtin.config import (AutoencoderConfig, DenoiserConfig, autoencoder_config_from_json,
                                           denoiser_config_from_json, to_json)
from backend.models.builtin.denoiser import DenoiserNet

FORMAT = "dsquare-builtin-v1"
FILES = {"autoencoder": "autoencoder.safetensors", "video": "video.safetensors", "multiview": "multiview.safetensors"}


class MissingWeights(FileNotFoundError):
    """The built-in weights are not where they should be (and random weights were not asked for)."""


def save_network(path: str | Path, model: str, net: torch.nn.Module, cfg, latent_space: str, dtype=torch.float16,
                 **facts) -> None:
    """Write ``net``'s state dict to ``path`` with its configuration and facts in the metadata."""
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in net.state_dict().items()}
    meta = {"format": FORMAT, "model": model, "config": to_json(cfg), "latent_space": latent_space}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in facts.items()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def read_metadata(path: str | Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _load(path: Path, model: str):
    if not path.is_file():
        raise MissingWeights(f"built-in {model} weights not found: {path}")
    meta = read_metadata(path)
    if meta.get("format") != FORMAT or meta.get("model") != model:
        raise ValueError(f"{path} is not a dsquare built-in {model} weight file "
                         f"(format={meta.get('format')!r}, model={meta.get('model')!r})")
    state = {}
    with safe_open(str(path), framework="pt") as f:
        for k in f.keys():
            t = f.get_tensor(k)
            state[k] = t.float() if t.is_floating_point() else t
    return meta, state


def load_autoencoder_net(path: str | Path) -> tuple[AutoencoderNet, dict]:
    meta, state = _load(Path(path), "autoencoder")
    net = AutoencoderNet(autoencoder_config_from_json(meta["config"]))
    net.load_state_dict(state)
    return net.eval(), meta


def load_denoiser_net(path: str | Path, model: str) -> tuple[DenoiserNet, dict]:
    meta, state = _load(Path(path), model)
    cfg = denoiser_config_from_json(meta["config"])
    if cfg.kind != model:
        raise ValueError(f"{path}: configuration kind {cfg.kind!r} does not match model {model!r}")
    net = DenoiserNet(cfg)
    net.load_state_dict(state)
    return net.eval(), meta


def latent_space_id(ae_cfg: AutoencoderConfig, ae_state: dict | None) -> str:
    """Identifier of an autoencoder's latent space: its configuration plus a hash of its weights."""
    h = hashlib.sha256(to_json(ae_cfg).encode())
    if ae_state is not None:
        for k in sorted(ae_state):
            h.update(k.encode())
            h.update(ae_state[k].detach().to("cpu", torch.float16).numpy().tobytes())
    return f"dsquare-builtin-ae/{h.hexdigest()[:12]}"
