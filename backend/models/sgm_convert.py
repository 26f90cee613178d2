"""Stability's generative-models ("sgm") VideoUNet checkpoints <-> diffusers' UNetSpatioTemporalConditionModel.

An original checkpoint (e.g. ``sv3d_p.safetensors``) stores the network under
``model.diffusion_model.`` in the layout of ``sgm.modules.diffusionmodules.video_model.VideoUNet``
(``input_blocks`` / ``middle_block`` / ``output_blocks`` of ``VideoResBlock`` and
``SpatialVideoTransformer``). This module turns the network's ``network_config`` params into a
diffusers config, renames every key both ways by module prefix, and loads strictly: a checkpoint
with missing, unexpected or mis-shaped keys is refused with an error listing a few of each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor, nn

from backend.errors import InvalidInput

SGM_PREFIX = "model.diffusion_model."


class CheckpointMismatch(InvalidInput):
    """A checkpoint whose keys or shapes do not fit the network it is loaded into.

    missing / unexpected / mismatched: full lists of key names (original layout where known).
    """

    def __init__(self, field: str, what: str, missing: list[str], unexpected: list[str], mismatched: list[str]):
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", mismatched)):
            if keys:
                shown = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")
                parts.append(f"{len(keys)} {label} key{'s' if len(keys) != 1 else ''} ({shown})")
        super().__init__(field, f"checkpoint does not fit {what}: " + "; ".join(parts))


@dataclass(frozen=True)
class SgmUNetSpec:
    """The parts of a VideoUNet ``network_config`` that fix its layout (validated)."""

    in_channels: int
    out_channels: int
    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention: tuple[bool, ...]  # per level: has spatial-temporal transformers
    transformer_depth: tuple[int, ...]  # per level
    heads: tuple[int, ...]  # attention heads per level
    context_dim: int
    adm_in_channels: int

    @property
    def levels(self) -> int:
        return len(self.channel_mult)

    @property
    def block_out_channels(self) -> tuple[int, ...]:
        return tuple(self.model_channels * m for m in self.channel_mult)


# network_config values the conversion assumes (the SVD / SV3D configs all use these).
_REQUIRED = {
    "use_linear_in_transformer": True,
    "extra_ff_mix_layer": True,
    "use_spatial_context": True,
    "merge_strategy": "learned_with_images",
    "num_classes": "sequential",
    "use_scale_shift_norm": False,
    "resblock_updown": False,
    "time_downup": False,
    "conv_resample": True,
    "dims": 2,
    "disable_temporal_crossattention": False,
    "max_ddpm_temb_period": 10000,
    "time_context_dim": None,
}


def parse_sgm_params(params: Mapping[str, Any]) -> SgmUNetSpec:
    """Validate ``network_config.params`` of a VideoUNet; InvalidInput('sgm_params.<name>') if unsupported."""
    p = dict(params)
    for name in ("in_channels", "out_channels", "model_channels", "num_res_blocks", "attention_resolutions",
                 "channel_mult", "context_dim", "adm_in_channels"):
        if p.get(name) is None:
            raise InvalidInput(f"sgm_params.{name}", "required by the VideoUNet conversion but not given")
    for name, want in _REQUIRED.items():
        if name in p and _norm(p[name]) != _norm(want):
            raise InvalidInput(f"sgm_params.{name}", f"only {want!r} is supported (as in SVD/SV3D), got {p[name]!r}")
    kernel = p.get("video_kernel_size", [3, 1, 1])
    if _norm(kernel) != [3, 1, 1]:
        raise InvalidInput("sgm_params.video_kernel_size", f"only [3, 1, 1] is supported, got {kernel!r}")
    mult = tuple(int(m) for m in p["channel_mult"])
    if not mult or mult[0] != 1:
        raise InvalidInput("sgm_params.channel_mult", f"must start with 1 (diffusers' layout), got {list(mult)}")
    levels = len(mult)
    mc = int(p["model_channels"])
    depth = p.get("transformer_depth", 1)
    depth = tuple([int(depth)] * levels) if isinstance(depth, int) else tuple(int(d) for d in depth)
    if len(depth) != levels:
        raise InvalidInput("sgm_params.transformer_depth", f"need one depth per level ({levels}), got {list(depth)}")
    middle = p.get("transformer_depth_middle")
    if middle is not None and int(middle) != depth[-1]:
        raise InvalidInput("sgm_params.transformer_depth_middle",
                           f"must equal the last level's depth ({depth[-1]}) in diffusers' layout, got {middle}")
    ds = [2 ** level for level in range(levels)]
    attn = tuple(d in set(int(a) for a in p["attention_resolutions"]) for d in ds)
    nhc, nh = int(p.get("num_head_channels", -1)), int(p.get("num_heads", -1))
    if (nhc == -1) == (nh == -1):
        raise InvalidInput("sgm_params.num_head_channels", "give exactly one of num_head_channels and num_heads")
    heads = []
    for m in mult:
        ch = mc * m
        h = ch // nhc if nhc != -1 else nh
        if ch % h or (nhc != -1 and ch % nhc):
            raise InvalidInput("sgm_params.num_head_channels", f"{ch} channels do not split into heads of {nhc}")
        heads.append(h)
    for ch in (mc * m for m in mult):
        if ch % 32:
            raise InvalidInput("sgm_params.model_channels", f"channels must be multiples of 32 (GroupNorm), got {ch}")
    return SgmUNetSpec(
        in_channels=int(p["in_channels"]), out_channels=int(p["out_channels"]), model_channels=mc,
        channel_mult=mult, num_res_blocks=int(p["num_res_blocks"]), attention=attn, transformer_depth=depth,
        heads=tuple(heads), context_dim=int(p["context_dim"]), adm_in_channels=int(p["adm_in_channels"]),
    )


def _norm(v):
    """Lists for any sequence (also OmegaConf's ListConfig), the value itself otherwise."""
    return list(v) if isinstance(v, Iterable) and not isinstance(v, (str, bytes, Mapping)) else v


def diffusers_unet_config(spec: SgmUNetSpec, addition_time_embed_dim: int = 256, num_frames: int = 25) -> dict:
    """``UNetSpatioTemporalConditionModel`` kwargs for the network described by ``spec``."""
    down = tuple("CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal" for a in spec.attention)
    up = tuple("CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal" for a in reversed(spec.attention))
    return dict(
        sample_size=None, in_channels=spec.in_channels, out_channels=spec.out_channels,
        down_block_types=down, up_block_types=up, block_out_channels=spec.block_out_channels,
        addition_time_embed_dim=addition_time_embed_dim, projection_class_embeddings_input_dim=spec.adm_in_channels,
        layers_per_block=spec.num_res_blocks, cross_attention_dim=spec.context_dim,
        transformer_layers_per_block=spec.transformer_depth, num_attention_heads=spec.heads, num_frames=num_frames,
    )


_RESBLOCK = (
    ("in_layers.0", "spatial_res_block.norm1"), ("in_layers.2", "spatial_res_block.conv1"),
    ("emb_layers.1", "spatial_res_block.time_emb_proj"), ("out_layers.0", "spatial_res_block.norm2"),
    ("out_layers.3", "spatial_res_block.conv2"), ("skip_connection", "spatial_res_block.conv_shortcut"),
    ("time_stack.in_layers.0", "temporal_res_block.norm1"), ("time_stack.in_layers.2", "temporal_res_block.conv1"),
    ("time_stack.emb_layers.1", "temporal_res_block.time_emb_proj"),
    ("time_stack.out_layers.0", "temporal_res_block.norm2"), ("time_stack.out_layers.3", "temporal_res_block.conv2"),
    ("time_mixer", "time_mixer"),
)
_TRANSFORMER = (
    ("norm", "norm"), ("proj_in", "proj_in"), ("proj_out", "proj_out"), ("transformer_blocks", "transformer_blocks"),
    ("time_stack", "temporal_transformer_blocks"), ("time_pos_embed.0", "time_pos_embed.linear_1"),
    ("time_pos_embed.2", "time_pos_embed.linear_2"), ("time_mixer", "time_mixer"),
)


def module_prefix_map(spec: SgmUNetSpec) -> dict[str, str]:
    """Original module path -> diffusers module path, for every module that owns parameters."""
    rows: list[tuple[str, str]] = [
        ("time_embed.0", "time_embedding.linear_1"), ("time_embed.2", "time_embedding.linear_2"),
        ("label_emb.0.0", "add_embedding.linear_1"), ("label_emb.0.2", "add_embedding.linear_2"),
        ("input_blocks.0.0", "conv_in"), ("out.0", "conv_norm_out"), ("out.2", "conv_out"),
    ]

    def res(src: str, dst: str) -> None:
        rows.extend((f"{src}.{a}", f"{dst}.{b}") for a, b in _RESBLOCK)

    def attn(src: str, dst: str) -> None:
        rows.extend((f"{src}.{a}", f"{dst}.{b}") for a, b in _TRANSFORMER)

    L, R = spec.levels, spec.num_res_blocks
    idx = 0
    for level in range(L):
        for j in range(R):
            idx += 1
            res(f"input_blocks.{idx}.0", f"down_blocks.{level}.resnets.{j}")
            if spec.attention[level]:
                attn(f"input_blocks.{idx}.1", f"down_blocks.{level}.attentions.{j}")
        if level != L - 1:
            idx += 1
            rows.append((f"input_blocks.{idx}.0.op", f"down_blocks.{level}.downsamplers.0.conv"))
    res("middle_block.0", "mid_block.resnets.0")
    attn("middle_block.1", "mid_block.attentions.0")
    res("middle_block.2", "mid_block.resnets.1")
    idx = 0
    for i, level in enumerate(reversed(range(L))):
        for j in range(R + 1):
            res(f"output_blocks.{idx}.0", f"up_blocks.{i}.resnets.{j}")
            k = 1
            if spec.attention[level]:
                attn(f"output_blocks.{idx}.1", f"up_blocks.{i}.attentions.{j}")
                k = 2
            if level > 0 and j == R:
                rows.append((f"output_blocks.{idx}.{k}.conv", f"up_blocks.{i}.upsamplers.0.conv"))
            idx += 1
    return dict(rows)


def rename_keys(keys: Iterable[str], prefixes: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Map each key through its longest matching module prefix; returns (old -> new, unmatched keys)."""
    mapping, unmatched = {}, []
    for key in keys:
        parts = key.split(".")
        for n in range(len(parts) - 1, 0, -1):
            head = ".".join(parts[:n])
            if head in prefixes:
                mapping[key] = prefixes[head] + "." + ".".join(parts[n:])
                break
        else:
            unmatched.append(key)
    return mapping, unmatched


def strip_sgm_prefix(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The network's keys without ``model.diffusion_model.``. A full checkpoint (with conditioner and
    first-stage keys) keeps only the prefixed network keys; a bare network state dict passes as is."""
    if any(k.startswith(SGM_PREFIX) for k in state_dict):
        return {k[len(SGM_PREFIX):]: v for k, v in state_dict.items() if k.startswith(SGM_PREFIX)}
    return dict(state_dict)


def sgm_to_diffusers(state_dict: Mapping[str, Tensor], spec: SgmUNetSpec) -> tuple[dict[str, Tensor], list[str]]:
    """Rename an original-layout network state dict (with or without the prefix) to diffusers' names.

    Returns (converted state dict, original keys that belong to no known module)."""
    sd = strip_sgm_prefix(state_dict)
    mapping, unmatched = rename_keys(sd.keys(), module_prefix_map(spec))
    return {new: sd[old] for old, new in mapping.items()}, unmatched


def diffusers_to_sgm(state_dict: Mapping[str, Tensor], spec: SgmUNetSpec, prefix: str = "") -> dict[str, Tensor]:
    """Inverse of ``sgm_to_diffusers``: diffusers names -> original names (optionally prefixed)."""
    inverse = {v: k for k, v in module_prefix_map(spec).items()}
    mapping, unmatched = rename_keys(state_dict.keys(), inverse)
    if unmatched:
        raise ValueError(f"diffusers keys with no original counterpart: {unmatched[:4]}")
    return {prefix + new: state_dict[old] for old, new in mapping.items()}


def build_diffusers_unet(spec: SgmUNetSpec, addition_time_embed_dim: int = 256, device: str | torch.device = "meta"):
    """An uninitialised ``UNetSpatioTemporalConditionModel`` for ``spec`` (on the meta device by default,
    so building the full-size network costs nothing until weights are assigned)."""
    from diffusers import UNetSpatioTemporalConditionModel

    with torch.device(device):
        return UNetSpatioTemporalConditionModel(**diffusers_unet_config(spec, addition_time_embed_dim))


def load_strict(module: nn.Module, state_dict: Mapping[str, Tensor], *, what: str, field: str = "checkpoint",
                unmatched: Iterable[str] = (), rename_back=None) -> None:
    """Load ``state_dict`` into ``module`` (assigning tensors), refusing any missing, unexpected or
    mis-shaped key with a ``CheckpointMismatch`` that lists them (names passed through ``rename_back``)."""
    expected = module.state_dict()
    back = rename_back or (lambda keys: list(keys))
    missing = sorted(back([k for k in expected if k not in state_dict]))
    unexpected = sorted(list(unmatched) + back([k for k in state_dict if k not in expected]))
    mismatched = sorted(back([k for k in state_dict
                              if k in expected and tuple(state_dict[k].shape) != tuple(expected[k].shape)]))
    if missing or unexpected or mismatched:
        raise CheckpointMismatch(field, what, missing, unexpected, mismatched)
    module.load_state_dict(dict(state_dict), strict=True, assign=True)
