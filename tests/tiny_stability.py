"""Tiny random stand-ins for the real checkpoints, written in the real formats (nothing downloaded).

``write_checkpoints(root)`` creates ``root/svd-xt/`` (diffusers format: unet/, vae/, image_encoder/)
and ``root/sv3d_p.safetensors`` (original generative-models layout, ``model.diffusion_model.``
prefix, plus stray conditioner / first-stage keys as in the real file) for a 32 x 32 image,
8 x 8 latent, 4-frame configuration.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sgm_reference import TINY_SV3D_PARAMS, RefVideoUNet, randomize_

CONTEXT_DIM = TINY_SV3D_PARAMS["context_dim"]
RESOLUTION = 32
FRAMES = 4
VIEWS = 4


def tiny_svd_unet(num_frames: int = FRAMES):
    from diffusers import UNetSpatioTemporalConditionModel

    torch.manual_seed(1)
    return UNetSpatioTemporalConditionModel(
        in_channels=8, out_channels=4, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        addition_time_embed_dim=256, projection_class_embeddings_input_dim=768, layers_per_block=1,
        cross_attention_dim=CONTEXT_DIM, transformer_layers_per_block=1, num_attention_heads=(2, 4),
        num_frames=num_frames,
    ).eval()


def tiny_vae():
    from diffusers import AutoencoderKLTemporalDecoder

    torch.manual_seed(2)
    return AutoencoderKLTemporalDecoder(down_block_types=("DownEncoderBlock2D",) * 3, block_out_channels=(32, 32, 32),
                                        layers_per_block=1, latent_channels=4).eval()


def tiny_clip():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(3)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8, projection_dim=CONTEXT_DIM)
    return CLIPVisionModelWithProjection(cfg).eval()


def tiny_sv3d_state_dict(seed: int = 4) -> dict[str, torch.Tensor]:
    """A random SV3D_p-layout network state dict (no prefix) from the reference transcription."""
    ref = RefVideoUNet(TINY_SV3D_PARAMS)
    randomize_(ref, torch.Generator().manual_seed(seed), scale=0.5)
    return {k: v.contiguous() for k, v in ref.state_dict().items()}


def write_checkpoints(root: Path) -> Path:
    from safetensors.torch import save_file

    root = Path(root)
    svd = root / "svd-xt"
    tiny_svd_unet().save_pretrained(svd / "unet")
    tiny_vae().save_pretrained(svd / "vae")
    tiny_clip().save_pretrained(svd / "image_encoder")
    full = {"model.diffusion_model." + k: v for k, v in tiny_sv3d_state_dict().items()}
    full["conditioner.embedders.3.timestep.dummy"] = torch.zeros(1)  # the real file carries more than the UNet
    full["first_stage_model.decoder.conv_in.weight"] = torch.zeros(2, 2)
    save_file(full, str(root / "sv3d_p.safetensors"))
    return root


def load_tiny_model_set(root: Path, **options):
    from backend.models.registry import load_model_set

    opts = dict(sv3d_params=TINY_SV3D_PARAMS, resolution=RESOLUTION, views=VIEWS, frames=FRAMES,
                local_files_only=True)
    opts.update(options)
    return load_model_set("svd-sv3d", device="cpu", checkpoints=str(root), **opts)


def random_image(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(3, RESOLUTION, RESOLUTION, generator=g) * 2 - 1)

