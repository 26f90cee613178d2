"""Configurations of the built-in networks (json-serialisable; stored in each weight file's metadata).

The defaults are the shipped architecture. Changing a default changes what ``untrained=True`` builds,
never what a weight file loads: a weight file carries its own configuration.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from protocol.cameras import DEFAULT_FILL, DEFAULT_FOV_DEG

IMAGE_SIZE = 64  # pixels, square
LATENT_CHANNELS = 4
LATENT_DOWN = 4  # 64x64x3 images <-> 16x16x4 latents
NUM_FRAMES = 8
NUM_VIEWS = 8
ELEVATION_RANGE_DEG = (0.0, 30.0)  # the multi-view training orbits' elevations


@dataclass
class AutoencoderConfig:
    """Convolutional autoencoder: image [3, S, S] in [-1, 1] <-> latent [latent_channels, S/4, S/4].

    channels: width at 1x, 1/2x and 1/4x resolution; blocks: residual blocks per level (decoder),
    encoder_blocks: per level in the encoder. ``scale`` multiplies raw encoder outputs so that latents
    have unit variance over the training images (set after training); ``shift`` is subtracted first.
    """

    image_size: int = IMAGE_SIZE
    latent_channels: int = LATENT_CHANNELS
    channels: tuple[int, ...] = (32, 64, 128)
    blocks: int = 2
    encoder_blocks: int = 1
    scale: float = 1.0
    shift: float = 0.0


@dataclass
class UNetConfig:
    """The sequence UNet shared by the video and the multi-view model.

    Works on latents [B, T, C, h, w]; 2-D convolutions per frame, plus attention that mixes frames:
    ``temporal_attention`` levels get per-pixel attention along T (like SVD's temporal layers),
    ``full_attention`` levels get attention over all T*h*w tokens of a sequence (cheap at 8x8 and 4x4,
    and what lets the multi-view model move content between views).

    in_channels = noisy latent + concatenated conditioning latent (+ ``cond_channels`` per frame).
    """

    latent_channels: int = LATENT_CHANNELS
    channels: tuple[int, ...] = (48, 96, 144)
    blocks: int = 1
    temporal_attention: tuple[int, ...] = ()
    full_attention: tuple[int, ...] = (1, 2)
    heads: int = 4
    emb_dim: int = 256
    groups: int = 16
    dropout: float = 0.0
    cond_channels: int = 0  # extra per-frame input channels (the multi-view model's rendered 3-D prior)

    @property
    def in_channels(self) -> int:
        return 2 * self.latent_channels + self.cond_channels


@dataclass
class LiftConfig:
    """The multi-view model's 3-D prior (``lift.OrbitLift``). grid: voxels per side over [-1, 1]^3;
    feat: front-view feature channels; hidden: MLP width; out: rendered feature channels (the UNet
    gets out + 1 with the opacity); samples: per ray; fov_deg/fill: the orbit rig of protocol.cameras."""

    grid: int = 20
    feat: int = 32
    hidden: int = 64
    out: int = 8
    samples: int = 32
    fov_deg: float = DEFAULT_FOV_DEG
    fill: float = DEFAULT_FILL

    @property
    def channels(self) -> int:
        return self.out + 1


@dataclass
class DenoiserConfig:
    """A UNet plus how it is conditioned and preconditioned.

    lift: when set (multi-view), ``lift.OrbitLift`` renders the front view's lifted volume into every
    output view and the UNet takes those renders as ``unet.cond_channels`` extra input channels.
    kind: 'video' (frame-index embedding, seq_len frames, length-1 sequences allowed as the one-image
    marginal) or 'multiview' (per-view camera embedding, seq_len views on an orbit).
    guidance: classifier-free guidance scale used by ``denoise`` (1 = off); training dropped the
    condition with probability cond_dropout so that the unconditional branch exists.
    """

    kind: str = "video"
    seq_len: int = NUM_FRAMES
    image_size: int = IMAGE_SIZE
    unet: UNetConfig = field(default_factory=UNetConfig)
    scaling: str = "v"
    sigma_data: float = 1.0
    guidance: float = 1.0
    cond_dropout: float = 0.1
    elevation_range_deg: tuple[float, float] = ELEVATION_RANGE_DEG
    lift: LiftConfig | None = None  # multi-view only: the front view lifted to a volume and rendered per view


def to_json(cfg) -> str:
    return json.dumps(asdict(cfg), sort_keys=True)


def _build(cls, data: dict):
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown configuration keys {unknown}")
    kwargs = {}
    for name, value in data.items():
        if name == "unet":
            value = _build(UNetConfig, value)
        elif name == "lift":
            value = None if value is None else _build(LiftConfig, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def autoencoder_config_from_json(text: str) -> AutoencoderConfig:
    return _build(AutoencoderConfig, json.loads(text))


def denoiser_config_from_json(text: str) -> DenoiserConfig:
    return _build(DenoiserConfig, json.loads(text))
