"""The image side of SVD and SV3D: their shared autoencoder and CLIP image encoder.

* ``SVDAutoencoder`` is the ``Autoencoder`` of the model set: SVD's VAE encoder (shared by SV3D,
  so both denoisers work in one latent space) and SVD-XT's temporal decoder, decoding a few frames
  at a time (``decode_chunk``) so that a 21 x 25 matrix at 576 x 576 decodes on one GPU.
* ``ClipImageEncoder`` embeds a conditioning image the way generative-models'
  ``FrozenOpenCLIPImageEmbedder`` does: antialiased bicubic resize to the encoder's input size,
  [-1, 1] -> [0, 1], CLIP mean/std, projected image embedding.
* ``ConditionEncoder`` turns one ``Cond`` into the two image conditionings both networks take: the
  CLIP embedding (cross-attention context; zeroed for the unconditional pass) and the *unscaled* VAE
  latent of the noise-augmented image (``cond_frames = image + cond_aug * noise``), concatenated to
  the network input. Results are cached per Cond, and the augmentation noise is seeded from the
  image content, so results do not depend on batching, call order or sharding.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
import torch
import torch.nn.functional as F
from torch import Tensor

from backend.errors import InvalidInput
from backend.models.base import Cond

#: latent-space identifier of SVD's VAE; SVD and SV3D adapters both report it, so they compose.
LATENT_SPACE = "stability-svd-vae-kl-f8"

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_antialiased(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Bicubic resize (align_corners) after a Gaussian blur that suppresses aliasing when shrinking,
    as kornia's ``resize(..., antialias=True)`` used by generative-models. images [B, C, H, W]."""
    h, w = images.shape[-2:]
    sigmas = [max((h / size[0] - 1.0) / 2.0, 0.001), max((w / size[1] - 1.0) / 2.0, 0.001)]
    out = images
    for axis, sigma in ((-2, sigmas[0]), (-1, sigmas[1])):
        k = int(max(2.0 * 2 * sigma, 3))
        k += 1 - k % 2
        if sigma <= 0.001:
            continue  # a kernel this narrow is the identity
        x = torch.arange(k, dtype=torch.float32, device=images.device) - k // 2
        kernel = torch.exp(-(x**2) / (2 * sigma**2))
        kernel = (kernel / kernel.sum()).to(images.dtype)
        C = out.shape[1]
        if axis == -2:
            weight = kernel.view(1, 1, k, 1).expand(C, 1, k, 1)
            out = F.conv2d(F.pad(out, (0, 0, k // 2, k // 2), mode="reflect"), weight, groups=C)
        else:
            weight = kernel.view(1, 1, 1, k).expand(C, 1, 1, k)
            out = F.conv2d(F.pad(out, (k // 2, k // 2, 0, 0), mode="reflect"), weight, groups=C)
    return F.interpolate(out, size=size, mode="bicubic", align_corners=True)


class ClipImageEncoder:
    """CLIP image embeddings: images [B, 3, H, W] in [-1, 1] -> [B, D] float32.

    model: transformers' ``CLIPVisionModelWithProjection`` (SVD's ``image_encoder``: OpenCLIP ViT-H/14,
    D = 1024)."""

    def __init__(self, model):
        self.model = model.eval()
        self.size = int(model.config.image_size)

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        x = resize_antialiased(images.to(self.device, torch.float32), (self.size, self.size))
        x = (x + 1.0) / 2.0
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        return self.model(pixel_values=x.to(self.dtype)).image_embeds.float()


class SVDAutoencoder:
    """SVD's VAE as the model set's ``Autoencoder`` (latents scaled by the VAE's scaling factor, 0.18215).

    vae: diffusers ``AutoencoderKLTemporalDecoder`` (SVD/SVD-XT ``vae/``) or ``AutoencoderKL``.
    image_size: (H, W) the model set works at (576 x 576 for SVD-XT + SV3D_p).
    decode_chunk: frames decoded per call (the temporal decoder sees them as one clip).
    encode_chunk: images encoded per call.
    """

    latent_space = LATENT_SPACE

    def __init__(self, vae, image_size: tuple[int, int], decode_chunk: int = 8, encode_chunk: int = 8):
        self.vae = vae.eval()
        cfg = vae.config
        self.scaling_factor = float(cfg.scaling_factor)
        self.factor = 2 ** (len(cfg.block_out_channels) - 1)
        H, W = int(image_size[0]), int(image_size[1])
        if H % self.factor or W % self.factor:
            raise InvalidInput("resolution", f"image size must be a multiple of {self.factor}, got {H}x{W}")
        self.image_size = (H, W)
        self.latent_shape = (int(cfg.latent_channels), H // self.factor, W // self.factor)
        self.decode_chunk = max(1, int(decode_chunk))
        self.encode_chunk = max(1, int(encode_chunk))
        import inspect

        self._temporal = "num_frames" in inspect.signature(vae.decode).parameters

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def _check(self, images: Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != self.image_size:
            raise InvalidInput("images", f"expected [B, 3, {self.image_size[0]}, {self.image_size[1]}], "
                                         f"got {tuple(images.shape)}")

    @torch.no_grad()
    def encode_unscaled(self, images: Tensor) -> Tensor:
        """images [B, 3, H, W] in [-1, 1] -> the posterior mode [B, C, h, w] (not scaled), float32."""
        self._check(images)
        outs = []
        for i in range(0, images.shape[0], self.encode_chunk):
            chunk = images[i:i + self.encode_chunk].to(self.device, self.dtype)
            outs.append(self.vae.encode(chunk).latent_dist.mode().float())
        return torch.cat(outs)

    def encode(self, images: Tensor) -> Tensor:
        """images [B, 3, H, W] in [-1, 1] -> latents [B, C, h, w] (scaled, roughly unit variance)."""
        return self.encode_unscaled(images) * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """latents [B, C, h, w] -> images [B, 3, H, W] in [-1, 1], ``decode_chunk`` frames at a time.

        Consecutive latents are decoded together as a clip by the temporal decoder, so pass the frames
        of one video (a matrix row) in order."""
        if latents.dim() != 4 or tuple(latents.shape[1:]) != self.latent_shape:
            raise InvalidInput("latents", f"expected [B, {', '.join(map(str, self.latent_shape))}], "
                                          f"got {tuple(latents.shape)}")
        outs = []
        for i in range(0, latents.shape[0], self.decode_chunk):
            z = latents[i:i + self.decode_chunk].to(self.device, self.dtype) / self.scaling_factor
            kwargs = {"num_frames": z.shape[0]} if self._temporal else {}
            outs.append(self.vae.decode(z, **kwargs).sample.float().clamp(-1.0, 1.0))
        return torch.cat(outs)


def content_seed(image: Tensor, base_seed: int) -> int:
    """A seed that depends only on the image's values (and base_seed): crc32 of its bytes."""
    data = image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return (zlib.crc32(data) + 1_000_003 * int(base_seed)) % (2**63 - 1)


class ConditionEncoder:
    """Per-Cond image conditioning for SVD/SV3D, cached: (context [1, D], concat latent [C, h, w]).

    The conditioning image is ``cond.image`` ([3, H, W] in [-1, 1]); a Cond with only a latent is
    decoded to an image first. The concat latent is the unscaled posterior mode of
    ``image + cond_aug * noise`` with the noise seeded from the image (``content_seed``).
    """

    def __init__(self, clip: ClipImageEncoder, autoencoder: SVDAutoencoder, seed: int = 0, cache_size: int = 1024):
        self.clip = clip
        self.autoencoder = autoencoder
        self.seed = int(seed)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[tuple[int, float], tuple[Cond, Tensor, Tensor]] = OrderedDict()

    @property
    def context_dim(self) -> int:
        return self.clip.dim

    def image_of(self, cond: Cond, field: str) -> Tensor:
        H, W = self.autoencoder.image_size
        if cond.image is not None:
            img = torch.as_tensor(cond.image)
            if tuple(img.shape) != (3, H, W):
                raise InvalidInput(f"{field}.image", f"expected [3, {H}, {W}] in [-1, 1], got {tuple(img.shape)}")
            return img.float()
        if cond.latent is not None:
            lat = torch.as_tensor(cond.latent)
            if tuple(lat.shape) != tuple(self.autoencoder.latent_shape):
                raise InvalidInput(f"{field}.latent", f"expected {tuple(self.autoencoder.latent_shape)}, "
                                                      f"got {tuple(lat.shape)}")
            return self.autoencoder.decode(lat[None].float())[0].cpu()
        raise InvalidInput(f"{field}.image", "SVD/SV3D need the conditioning image (or its latent); got neither")

    def __call__(self, cond: Cond, cond_aug: float, field: str = "cond") -> tuple[Tensor, Tensor]:
        key = (id(cond), float(cond_aug))
        hit = self._cache.get(key)
        if hit is not None and hit[0] is cond:
            self._cache.move_to_end(key)
            return hit[1], hit[2]
        image = self.image_of(cond, field)
        context = self.clip(image[None])  # [1, D]
        noisy = image
        if cond_aug > 0:
            gen = torch.Generator().manual_seed(content_seed(image, self.seed))
            noisy = image + float(cond_aug) * torch.randn(image.shape, generator=gen).to(image.device)
        latent = self.autoencoder.encode_unscaled(noisy[None])[0]
        self._cache[key] = (cond, context, latent)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return context, latent

    def clear(self) -> None:
        self._cache.clear()
