"""Stable Video Diffusion (SVD, SVD-XT) behind the ``SequenceDenoiser`` interface: the video model.

A row of the views x frames matrix is one SVD clip: conditioned on the row's frame-0 image (CLIP
embedding + the VAE latent of the noise-augmented image concatenated to every frame), with the
vector (fps_id, motion_bucket_id, cond_aug) embedded at 256 each, EDM v-scaling with c_noise =
log(sigma) / 4, and classifier-free guidance ramped linearly over frames (1.0 -> 2.5 for SVD,
1.5 -> 3.0 for SVD-XT, as generative-models' inference configs).

The weights come in diffusers' format (``unet/``, ``vae/``, ``image_encoder/`` of
``stabilityai/stable-video-diffusion-img2vid[-xt]``), loaded by ``load_svd_unet``.

For the sampler's theorem mode the one-entry marginal is SVD itself on length-1 sequences (the
conditioning image's clip of one frame); see ``backend.models.stability``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from backend.errors import InvalidInput
from backend.models.base import Cond
from backend.models.guidance import Guidance
from backend.models.stability_denoiser import StabilityVideoDenoiser
from backend.models.stability_encoders import ConditionEncoder
from backend.models.video_unet import VideoUNet

SVD_VECTOR_WIDTHS = (256, 256, 256)  # fps_id, motion_bucket_id, cond_aug
SVD_GUIDANCE = Guidance("linear", 1.0, 2.5)  # scripts/sampling/configs/svd.yaml
SVD_XT_GUIDANCE = Guidance("linear", 1.5, 3.0)  # svd_xt.yaml
DEFAULT_FPS_ID = 6
DEFAULT_MOTION_BUCKET_ID = 127
DEFAULT_COND_AUG = 0.02


class SVDDenoiser(StabilityVideoDenoiser):
    """SVD / SVD-XT on sequences over frames.

    Per-Cond overrides in ``cond.extra``: ``fps_id``, ``motion_bucket_id``, ``cond_aug``.
    """

    name = "SVD"
    sequence_field = "frames"

    def __init__(self, net: VideoUNet, encoder: ConditionEncoder | None, *, latent_shape, seq_len: int = 25,
                 max_frames: int | None = None, guidance: Guidance | None = None, fps_id: float = DEFAULT_FPS_ID,
                 motion_bucket_id: float = DEFAULT_MOTION_BUCKET_ID, cond_aug: float = DEFAULT_COND_AUG,
                 max_batch: int | None = None):
        if tuple(net.vector_widths) != SVD_VECTOR_WIDTHS:
            raise InvalidInput("svd", f"SVD's vector is (fps_id, motion_bucket_id, cond_aug) at 256 each, the "
                                      f"network has widths {net.vector_widths}")
        if guidance is None:
            guidance = SVD_XT_GUIDANCE if net.unet.config.num_frames >= 25 else SVD_GUIDANCE
        super().__init__(net, encoder, latent_shape=latent_shape, seq_len=seq_len, max_frames=max_frames,
                         guidance=guidance, cond_aug=cond_aug, max_batch=max_batch)
        self.name = "SVD-XT" if net.unet.config.num_frames >= 25 else "SVD"
        self.fps_id = float(fps_id)
        self.motion_bucket_id = float(motion_bucket_id)

    def frame_vector(self, cond: Cond, T: int, order: Tensor | None) -> Tensor:
        extra = cond.extra or {}
        vec = torch.tensor([float(extra.get("fps_id", self.fps_id)),
                            float(extra.get("motion_bucket_id", self.motion_bucket_id)),
                            float(extra.get("cond_aug", self.cond_aug))])
        return vec.expand(T, 3).clone()


def load_svd_unet(source: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu",
                  local_files_only: bool | None = None) -> VideoUNet:
    """SVD's UNet from a diffusers-format folder or Hugging Face repo id (its ``unet/`` subfolder).

    ``local_files_only`` defaults to the ``HF_HUB_OFFLINE`` environment setting."""
    from diffusers import UNetSpatioTemporalConditionModel

    unet = UNetSpatioTemporalConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype,
                                                            **hub_kwargs(local_files_only))
    widths = (int(unet.config.addition_time_embed_dim),) * 3
    if sum(widths) != int(unet.config.projection_class_embeddings_input_dim):
        raise InvalidInput("svd", f"{source}: not an SVD UNet (vector input "
                                  f"{unet.config.projection_class_embeddings_input_dim} wide, expected 3 x "
                                  f"{unet.config.addition_time_embed_dim})")
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())  # PyTorch SDPA (flash / memory-efficient kernels on GPU)
    return VideoUNet(unet if str(device) == "cpu" else unet.to(device), widths).eval()


def hub_kwargs(local_files_only: bool | None) -> dict[str, Any]:
    """from_pretrained kwargs: hub access as HF_HUB_OFFLINE says; low-memory loading only with accelerate."""
    import importlib.util

    from backend.models.hub import offline

    return {"local_files_only": offline() if local_files_only is None else bool(local_files_only),
            "low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None}
