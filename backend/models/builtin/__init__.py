"""dsquare's built-in models: a tiny autoencoder, video model and multi-view model, shipped in the repo.

``load_builtin()`` with no arguments loads the shipped weights from ``weights/`` next to this file: no
network access, no configuration. It refuses clearly (``MissingWeights``) when they are absent,
unless ``untrained=True`` asks for randomly initialised networks of the shipped architecture (for
plumbing tests at the right shapes and speeds).

    images [B, 3, 64, 64] in [-1, 1] <-> latents [B, 4, 16, 16]      (autoencoder)
    video:     8 frames, conditioned on frame 0 (any camera)         (rows of the matrix)
    multiview: 8 views on an orbit, conditioned on the front view and each view's (elevation, azimuth)
    element:   the video model on length-1 sequences (one-image marginal for theorem mode)
"""

from __future__ import annotations

from pathlib import Path

import torch

from backend.models.base import ModelLimits, ModelSet, check_compatible
from backend.models.builtin.autoencoder import AutoencoderNet, BuiltinAutoencoder
from backend.models.builtin.config import (ELEVATION_RANGE_DEG, NUM_FRAMES, NUM_VIEWS, AutoencoderConfig,
                                           DenoiserConfig, LiftConfig, UNetConfig)
from backend.models.builtin.denoiser import BuiltinDenoiser, DenoiserNet
from backend.models.builtin.weights_io import (FILES, MissingWeights, latent_space_id, load_autoencoder_net,
                                               load_denoiser_net)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SIGMA_MIN = 0.002
SIGMA_MAX = 80.0

__all__ = ["load_builtin", "MissingWeights", "WEIGHTS_DIR", "BuiltinAutoencoder", "BuiltinDenoiser",
           "AutoencoderNet", "DenoiserNet", "AutoencoderConfig", "DenoiserConfig", "UNetConfig",
           "default_configs", "build_model_set"]


def default_configs() -> dict:
    """The shipped architecture: {'autoencoder': AutoencoderConfig, 'video': DenoiserConfig, 'multiview': ...}.

    Both denoisers use UNetConfig's defaults: channels (48, 96, 144), one residual block per level,
    attention over all frame x pixel tokens at 8x8 and 4x4 (chosen by held-out learning curves at
    equal CPU time against a (64, 128, 192) two-block network; see docs/benchmarks.md). The multi-view
    model adds the 3-D prior of ``lift.py`` (the front view lifted to a volume and rendered into each
    view, as extra UNet input channels)."""
    return {
        "autoencoder": AutoencoderConfig(),
        "video": DenoiserConfig(kind="video", seq_len=NUM_FRAMES, unet=UNetConfig()),
        "multiview": DenoiserConfig(kind="multiview", seq_len=NUM_VIEWS, unet=UNetConfig(cond_channels=LiftConfig().channels),
                                    lift=LiftConfig()),
    }


def build_model_set(ae_net: AutoencoderNet, video_net: DenoiserNet, multiview_net: DenoiserNet, latent_space: str,
                    device: str = "cpu", guidance_video: float | None = None, guidance_multiview: float | None = None,
                    name: str = "builtin", info: dict | None = None) -> ModelSet:
    """Wrap three networks into a ``ModelSet`` (the one code path for shipped, trained and random weights)."""
    autoencoder = BuiltinAutoencoder(ae_net, latent_space, device)
    video = BuiltinDenoiser(video_net, latent_space, guidance=guidance_video, device=device)
    element = BuiltinDenoiser(video_net, latent_space, single=True, guidance=guidance_video, device=device)
    multiview = BuiltinDenoiser(multiview_net, latent_space, guidance=guidance_multiview, device=device)
    check_compatible(video, multiview, element)
    elev = tuple(float(e) for e in multiview_net.cfg.elevation_range_deg)
    limits = ModelLimits(views=(multiview.seq_len,), frames=(video.seq_len,), resolution=autoencoder.image_size[0],
                         elevation_deg=elev)
    return ModelSet(name=name, autoencoder=autoencoder, video=video, multiview=multiview, element=element,
                    limits=limits, device=device, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, info=dict(info or {}))


def load_builtin(device: str = "cpu", checkpoints: str | None = None, *, untrained: bool = False, seed: int = 0,
                 guidance_video: float | None = None, guidance_multiview: float | None = None, **options) -> ModelSet:
    """The built-in model set.

    Args:
        device: torch device for the networks ('cpu', 'cuda', ...).
        checkpoints: a directory holding autoencoder/video/multiview.safetensors to use instead of
            the shipped ``weights/`` (e.g. a training run's export).
        untrained: build randomly initialised networks of the shipped architecture (seeded by
            ``seed``) instead of loading weights; for plumbing tests only.
        guidance_video / guidance_multiview: classifier-free guidance scales overriding the ones
            stored with the weights.

    Raises:
        MissingWeights: a weight file is absent and ``untrained`` was not asked for.
        ValueError: unknown options, or weight files that do not belong together.
    """
    if options:
        raise ValueError(f"load_builtin: unknown options {sorted(options)}; known: untrained, seed, "
                         "guidance_video, guidance_multiview")
    if untrained:
        cfgs = default_configs()
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            ae = AutoencoderNet(cfgs["autoencoder"]).eval()
            video = DenoiserNet(cfgs["video"]).eval()
            multiview = DenoiserNet(cfgs["multiview"]).eval()
        finally:
            torch.random.set_rng_state(gen_state)
        space = latent_space_id(cfgs["autoencoder"], None) + "-untrained"
        return build_model_set(ae, video, multiview, space, device, guidance_video, guidance_multiview,
                               info={"weights": "untrained", "seed": seed})

    folder = Path(checkpoints) if checkpoints is not None else WEIGHTS_DIR
    missing = [str(folder / f) for f in FILES.values() if not (folder / f).is_file()]
    if missing:
        raise MissingWeights(
            "built-in model weights are missing: " + ", ".join(missing)
            + ". Train and export them with scripts/train.py (see backend/models/builtin/weights/README.md), "
            "point checkpoints= at a folder that holds them, or pass untrained=True for random networks.")
    ae, ae_meta = load_autoencoder_net(folder / FILES["autoencoder"])
    video, v_meta = load_denoiser_net(folder / FILES["video"], "video")
    multiview, m_meta = load_denoiser_net(folder / FILES["multiview"], "multiview")
    space = ae_meta["latent_space"]
    for name, meta in (("video", v_meta), ("multiview", m_meta)):
        if meta.get("latent_space") != space:
            raise ValueError(f"{folder / FILES[name]} was trained in latent space {meta.get('latent_space')!r}, "
                             f"but the autoencoder is {space!r}: the weight files do not belong together")
    info = {"weights": str(folder), "steps": {"autoencoder": ae_meta.get("step"), "video": v_meta.get("step"),
                                              "multiview": m_meta.get("step")}}
    return build_model_set(ae, video, multiview, space, device, guidance_video, guidance_multiview, info=info)
