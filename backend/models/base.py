"""The one interface every denoiser sits behind: built-in and real models alike.

A ``SequenceDenoiser`` predicts clean latents x0 (EDM-style) for a batch of sequences of latents.
Rows of the views x frames matrix are sequences over frames (video model); columns are sequences
over views (multi-view model). Conditioning, preconditioning and classifier-free guidance all
happen inside ``denoise``, so the sampler only ever sees x0 predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor


@dataclass(frozen=True)
class Cond:
    """Conditioning for one sequence. Each model reads the fields it needs and ignores the rest.

    latent:    [C, h, w] clean latent of the conditioning image (video: the row's frame 0;
               multi-view: the front view at this column's frame).
    image:     [3, H, W] the conditioning image in [-1, 1], for image encoders (CLIP or learned).
    elevation: [T] per-output-frame camera elevation in radians (multi-view models), or None.
    azimuth:   [T] per-output-frame camera azimuth in radians, relative to the conditioning view.
    extra:     model-specific values (e.g. fps, motion bucket, an index for exact test models).
    """

    latent: Tensor | None = None
    image: Tensor | None = None
    elevation: Tensor | None = None
    azimuth: Tensor | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class SequenceDenoiser(Protocol):
    """EDM x0 prediction on batches of sequences.

    Attributes:
        seq_len: the sequence length the model was trained for, or None if any length works.
        latent_shape: (C, h, w) of one latent image.
        latent_space: identifier of the autoencoder whose latents the model denoises; two models
            can only be composed when these are equal.
    """

    seq_len: int | None
    latent_shape: tuple[int, int, int]
    latent_space: str

    def denoise(self, x: Tensor, sigma: Tensor, conds: Sequence[Cond]) -> Tensor:
        """x: [B, T, C, h, w] noisy latents at noise level sigma [B]; one Cond per sequence.

        Returns x0 predictions [B, T, C, h, w] (same dtype and device as x).
        """
        ...


@dataclass(frozen=True)
class EDMScaling:
    """Preconditioning coefficients, as in Karras et al. (2022) and Stability's denoisers.

    ``kind="v"`` is ``VScalingWithEDMcNoise`` (SVD, SV3D): the network predicts v with
    sigma_data = 1.  ``kind="edm"`` is the original EDM F-prediction with a given sigma_data.
    Both use c_noise = 0.25 * log(sigma).

        x0 = c_skip * x + c_out * F(c_in * x, c_noise)
    """

    kind: str = "v"
    sigma_data: float = 1.0

    def __call__(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """sigma [B] -> (c_skip, c_out, c_in, c_noise), each [B]."""
        sigma = sigma.to(torch.float32)
        sd2 = self.sigma_data**2
        if self.kind == "v":
            c_skip = 1.0 / (sigma**2 + 1.0)
            c_out = -sigma / (sigma**2 + 1.0).sqrt()
            c_in = 1.0 / (sigma**2 + 1.0).sqrt()
        elif self.kind == "edm":
            c_skip = sd2 / (sigma**2 + sd2)
            c_out = sigma * self.sigma_data / (sigma**2 + sd2).sqrt()
            c_in = 1.0 / (sigma**2 + sd2).sqrt()
        else:
            raise ValueError(f"EDMScaling.kind must be 'v' or 'edm', got {self.kind!r}")
        c_noise = 0.25 * sigma.clamp_min(1e-12).log()
        return c_skip, c_out, c_in, c_noise

    def x0(self, x: Tensor, sigma: Tensor, network_output: Tensor, c_skip: Tensor, c_out: Tensor) -> Tensor:
        """Combine a network output with the skip connection: x [B, T, ...], coefficients [B]."""
        shape = (-1,) + (1,) * (x.dim() - 1)
        return c_skip.view(shape).to(x.dtype) * x + c_out.view(shape).to(x.dtype) * network_output


def edm_training_sigmas(n: int, p_mean: float = 0.7, p_std: float = 1.6, generator: torch.Generator | None = None) -> Tensor:
    """Noise levels for training, log-normal as in EDM/SVD: log(sigma) ~ N(p_mean, p_std^2). Returns [n]."""
    return (p_mean + p_std * torch.randn(n, generator=generator)).exp()


def check_compatible(video: SequenceDenoiser, multiview: SequenceDenoiser, element: SequenceDenoiser | None = None) -> None:
    """Refuse to compose models that do not share one latent space and latent shape."""
    from backend.errors import IncompatibleModels

    models = {"video": video, "multiview": multiview}
    if element is not None:
        models["element"] = element
    spaces = {name: getattr(m, "latent_space", None) for name, m in models.items()}
    if len(set(spaces.values())) != 1:
        raise IncompatibleModels(
            "multiview",
            "the models must share one latent space to be composed, got "
            + ", ".join(f"{k}={v!r}" for k, v in spaces.items()),
        )
    shapes = {name: tuple(m.latent_shape) for name, m in models.items()}
    if len(set(shapes.values())) != 1:
        raise IncompatibleModels(
            "multiview", "the models must share one latent shape (C, h, w), got "
            + ", ".join(f"{k}={v}" for k, v in shapes.items()),
        )


@runtime_checkable
class Autoencoder(Protocol):
    """Maps images to the latent space the denoisers work in (SVD's VAE, or the built-in one).

    encode: images [B, 3, H, W] in [-1, 1] -> latents [B, C, h, w] (already scaled so that latents
            have roughly unit variance, as the denoisers expect).
    decode: latents [B, C, h, w] -> images [B, 3, H, W] in [-1, 1].
    """

    latent_space: str
    latent_shape: tuple[int, int, int]
    image_size: tuple[int, int]  # (H, W)

    def encode(self, images: Tensor) -> Tensor: ...

    def decode(self, latents: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class ModelLimits:
    """What a model set accepts; the backend advertises these to clients in Welcome.

    views / frames: the matrix sizes the models can produce (V, F); resolution: image side in
    pixels (square images); elevation_deg: allowed orbit elevations; max_steps: sampling steps.
    """

    views: tuple[int, ...]
    frames: tuple[int, ...]
    resolution: int
    elevation_deg: tuple[float, float] = (-30.0, 45.0)
    max_steps: int = 200

    def to_dict(self) -> dict:
        return {"views": list(self.views), "frames": list(self.frames), "resolution": self.resolution,
                "elevation_deg": list(self.elevation_deg), "max_steps": self.max_steps}


@dataclass
class ModelSet:
    """Everything stage one needs: a shared autoencoder, the two denoisers, and the optional
    one-image marginal (``element``) for the sampler's theorem mode.

    Conditions are built the same way for every model set (see ``video_cond``/``multiview_cond``),
    so built-in and real models are interchangeable downstream.
    """

    name: str
    autoencoder: Autoencoder
    video: SequenceDenoiser
    multiview: SequenceDenoiser
    element: SequenceDenoiser | None
    limits: ModelLimits
    device: str = "cpu"
    sigma_min: float = 0.002
    sigma_max: float = 700.0
    info: dict = field(default_factory=dict)

    @staticmethod
    def video_cond(latent: Tensor, image: Tensor | None = None, **extra) -> Cond:
        """Condition for one row: the view's latent [C, h, w] (and image [3, H, W]) at time 0."""
        return Cond(latent=latent, image=image, extra=extra)

    @staticmethod
    def multiview_cond(latent: Tensor, elevation_rad: Tensor, azimuth_rad: Tensor, image: Tensor | None = None,
                       **extra) -> Cond:
        """Condition for one column: the front view's latent at this frame and the cameras [V]
        (azimuth relative to the front view) of every output view."""
        return Cond(latent=latent, image=image, elevation=elevation_rad, azimuth=azimuth_rad, extra=extra)
