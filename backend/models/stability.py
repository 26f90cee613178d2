"""The ``svd-sv3d`` model set: SVD-XT (video, rows) + SV3D_p (multi-view, columns) from real weights.

``load_svd_sv3d(device, checkpoints, **options)`` is what ``--models svd-sv3d --device cuda
--checkpoints DIR`` loads (see ``backend.models.hub`` for the folder layout and the Hugging Face
cache). Both denoisers share SVD's VAE encoder (one latent space) and CLIP image encoder; the
model set's autoencoder decodes with SVD-XT's temporal decoder in chunks.

Theorem mode's one-entry marginal (``ModelSet.element``) is SVD-XT itself on length-1 sequences:
the distribution of a single frame given the row's conditioning image, the marginal both models'
sequences contain.

Options (all optional):
    svd, sv3d           explicit sources (folder / repo id; file / ``repo:filename``)
    sv3d_params         SV3D_p network_config params (default: the released model's)
    dtype               auto | float32 | bfloat16 | float16 (auto: bf16 on GPUs that have it, fp32 on CPU)
    resolution          image side in pixels (576)
    views, frames       sequence lengths of SV3D_p (21) and SVD (the UNet's num_frames: 25 for XT)
    max_batch           sequences per network call: an int, or None/"auto" (from free GPU memory)
    decode_chunk        frames per temporal-decoder call (8)
    svd_guidance        (min, max) linear over frames; sv3d_guidance (min, max) triangle over views;
    guidance            False turns classifier-free guidance off for both (half the compute)
    guidance_sigma_range (lo, hi): guide only at noise levels in [lo, hi] (default: every step)
    fps_id, motion_bucket_id, svd_cond_aug, sv3d_cond_aug, azimuth_sign, seed
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any

import torch

from backend.errors import InvalidInput
from backend.models.base import ModelLimits, ModelSet
from backend.models.guidance import Guidance
from backend.models.hub import missing_message, offline, resolve_sv3d, resolve_svd
from backend.models.memory import auto_max_batch, resolve_dtype
from backend.models.stability_encoders import ClipImageEncoder, ConditionEncoder, SVDAutoencoder
from backend.models.sv3d import SV3D_COND_AUG, SV3D_GUIDANCE, SV3D_P_PARAMS, SV3D_VIEWS, SV3DDenoiser, load_sv3d_unet
from backend.models.svd import (
    DEFAULT_COND_AUG, DEFAULT_FPS_ID, DEFAULT_MOTION_BUCKET_ID, SVD_GUIDANCE, SVD_XT_GUIDANCE, SVDDenoiser,
    hub_kwargs, load_svd_unet,
)

KNOWN_OPTIONS = {
    "svd", "sv3d", "sv3d_params", "dtype", "resolution", "views", "frames", "max_batch", "decode_chunk",
    "svd_guidance", "sv3d_guidance", "guidance", "fps_id", "motion_bucket_id", "svd_cond_aug", "sv3d_cond_aug",
    "azimuth_sign", "seed", "local_files_only", "guidance_sigma_range",
}


def load_svd_sv3d(device: str = "cuda", checkpoints: str | None = None, **options: Any) -> ModelSet:
    """Build the SVD-XT + SV3D_p model set on ``device`` (see the module docstring for options)."""
    unknown = sorted(set(options) - KNOWN_OPTIONS)
    if unknown:
        raise InvalidInput(unknown[0], f"unknown option for svd-sv3d; known: {sorted(KNOWN_OPTIONS)}")
    _check_device(device)
    dtype = resolve_dtype(options.get("dtype"), device)
    resolution = _positive_int(options.get("resolution", 576), "resolution")
    local_only = options.get("local_files_only")
    local_only = offline() if local_only is None else bool(local_only)

    svd_source, how = resolve_svd(checkpoints, options.get("svd"))
    try:
        with _quiet_diffusers():
            video_net = load_svd_unet(svd_source, dtype=dtype, device=device, local_files_only=local_only)
            vae, clip = _load_svd_encoders(svd_source, dtype, device, local_only)
    except InvalidInput:
        raise
    except (OSError, ValueError, EnvironmentError) as exc:
        looked = checkpoints if how == "hub" else None
        raise InvalidInput("checkpoints", missing_message(svd_source if how == "hub" else f"{svd_source} (SVD)",
                                                          looked, exc)) from exc
    sv3d_path = resolve_sv3d(checkpoints, options.get("sv3d"))
    mv_net = load_sv3d_unet(sv3d_path, sgm_params=options.get("sv3d_params", SV3D_P_PARAMS), dtype=dtype,
                            device=device)

    autoencoder = SVDAutoencoder(vae, (resolution, resolution), decode_chunk=options.get("decode_chunk", 8))
    clip = ClipImageEncoder(clip)
    if clip.dim != video_net.context_dim or clip.dim != mv_net.context_dim:
        raise InvalidInput("checkpoints", f"CLIP embeds to {clip.dim}, but the UNets cross-attend to "
                                          f"{video_net.context_dim} (SVD) / {mv_net.context_dim} (SV3D_p)")
    encoder = ConditionEncoder(clip, autoencoder, seed=int(options.get("seed", 0)))
    frames = _positive_int(options.get("frames", int(video_net.unet.config.num_frames)), "frames")
    views = _positive_int(options.get("views", SV3D_VIEWS), "views")
    use_guidance = bool(options.get("guidance", True))
    svd_default = SVD_XT_GUIDANCE if int(video_net.unet.config.num_frames) >= 25 else SVD_GUIDANCE
    interval = options.get("guidance_sigma_range")
    svd_guidance = _guidance("linear", options.get("svd_guidance"), svd_default, use_guidance, "svd_guidance", interval)
    sv3d_guidance = _guidance("triangle", options.get("sv3d_guidance"), SV3D_GUIDANCE, use_guidance, "sv3d_guidance",
                              interval)

    latent_shape = autoencoder.latent_shape
    max_batch = options.get("max_batch")
    video_batch = mv_batch = None if max_batch in (None, "auto") else _positive_int(max_batch, "max_batch")
    if max_batch in (None, "auto") and torch.device(device).type == "cuda":
        hw = latent_shape[1:]
        video_batch = auto_max_batch(video_net.unet, frames, hw, device, dtype, what="SVD-XT")
        mv_batch = auto_max_batch(mv_net.unet, views, hw, device, dtype, what="SV3D_p")

    svd_kwargs = dict(latent_shape=latent_shape, guidance=svd_guidance, fps_id=options.get("fps_id", DEFAULT_FPS_ID),
                      motion_bucket_id=options.get("motion_bucket_id", DEFAULT_MOTION_BUCKET_ID),
                      cond_aug=options.get("svd_cond_aug", DEFAULT_COND_AUG))
    video = SVDDenoiser(video_net, encoder, seq_len=frames, max_batch=video_batch, **svd_kwargs)
    # theorem mode's one-entry marginal: the same network and encoders on one-frame sequences
    element = SVDDenoiser(video_net, encoder, seq_len=1, max_frames=1,
                          max_batch=None if video_batch is None else video_batch * frames, **svd_kwargs)
    element.name = f"{video.name} (one frame)"
    multiview = SV3DDenoiser(mv_net, encoder, latent_shape=latent_shape, seq_len=views, guidance=sv3d_guidance,
                             cond_aug=options.get("sv3d_cond_aug", SV3D_COND_AUG),
                             azimuth_sign=options.get("azimuth_sign", 1.0), max_batch=mv_batch)
    limits = ModelLimits(views=(views,), frames=(frames,), resolution=resolution)
    info = {"svd": svd_source, "sv3d": sv3d_path, "dtype": str(dtype).replace("torch.", ""),
            "max_batch": {"video": video_batch, "multiview": mv_batch},
            "guidance": {"video": svd_guidance.__dict__, "multiview": sv3d_guidance.__dict__},
            "element": "SVD on length-1 sequences"}
    return ModelSet(name="svd-sv3d", autoencoder=autoencoder, video=video, multiview=multiview, element=element,
                    limits=limits, device=str(device), sigma_min=0.002, sigma_max=700.0, info=info)


@contextmanager
def _quiet_diffusers():
    """Silence diffusers' loading chatter (the accelerate hint, a deprecated hub argument) for one load."""
    import logging

    logger = logging.getLogger("diffusers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            yield
    finally:
        logger.setLevel(level)


def _load_svd_encoders(source: str, dtype: torch.dtype, device: str, local_only: bool):
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPVisionModelWithProjection

    vae = AutoencoderKLTemporalDecoder.from_pretrained(source, subfolder="vae", torch_dtype=dtype,
                                                       **hub_kwargs(local_only)).to(device)
    clip = CLIPVisionModelWithProjection.from_pretrained(source, subfolder="image_encoder", dtype=dtype,
                                                         local_files_only=local_only).to(device)
    return vae.eval(), clip.eval()


def _guidance(kind: str, value, default: Guidance, enabled: bool, field: str, sigma_range=None) -> Guidance:
    if not enabled:
        return Guidance("none")
    if isinstance(value, Guidance):
        return value
    if value is None:
        lo, hi = default.min_scale, default.max_scale
    else:
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(field, f"expected (min_scale, max_scale), got {value!r}") from exc
    if sigma_range is not None:
        try:
            sigma_range = tuple(float(v) for v in sigma_range)
        except (TypeError, ValueError) as exc:
            raise InvalidInput("guidance_sigma_range", f"expected (lo, hi), got {sigma_range!r}") from exc
    return Guidance(kind, lo, hi, sigma_range)


def _positive_int(value, field: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(field, f"expected a positive integer, got {value!r}") from exc
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()) or n < 1:
        raise InvalidInput(field, f"expected a positive integer, got {value!r}")
    return n


def _check_device(device: str) -> None:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInput("device", f"not a device: {device!r} (use cpu or cuda[:N])") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("device", "cuda requested but no CUDA GPU is available here (use --device cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise InvalidInput("device", f"only cpu and cuda are supported, got {device!r}")
