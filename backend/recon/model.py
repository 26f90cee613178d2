"""Canonical 3D Gaussians (the scene at the first frame) and their optimiser bookkeeping.

Parameters are stored unconstrained: ``means`` [N, 3], ``quats`` [N, 4] (w, x, y, z),
``log_scales`` [N, 3], ``opacity_logits`` [N], ``colour_logits`` [N, 3]; the properties give the
activated values (scales > 0, opacities and colours in (0, 1)). ``offsets`` [F - 1, N, 3] are small
per-keyframe residual displacements on top of the motion field (keyframe 0 has none): they let the
renders match every frame's detail without bending the smooth field that moves the user's mesh.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

GAUSSIAN_PARAMS = ("means", "quats", "log_scales", "opacity_logits", "colour_logits", "offsets")
ROW_DIM = {"offsets": 1}  # the dimension that indexes Gaussians (0 for the others)


def _logit(x: Tensor) -> Tensor:
    x = x.clamp(1e-4, 1 - 1e-4)
    return torch.log(x / (1 - x))


class Gaussians(nn.Module):
    def __init__(self, means: Tensor, colours: Tensor, scales: Tensor, opacity: float = 0.5, num_keys: int = 1):
        super().__init__()
        N = means.shape[0]
        self.offsets = nn.Parameter(torch.zeros(max(num_keys - 1, 0), N, 3))
        self.means = nn.Parameter(means.float().clone())
        q = torch.zeros(N, 4)
        q[:, 0] = 1.0
        self.quats = nn.Parameter(q)
        self.log_scales = nn.Parameter(torch.log(scales.float().clamp_min(1e-6)).clone())
        self.opacity_logits = nn.Parameter(_logit(torch.full((N,), float(opacity))))
        self.colour_logits = nn.Parameter(_logit(colours.float()))

    def __len__(self) -> int:
        return self.means.shape[0]

    def key_offsets(self) -> Tensor:
        """Residual offsets per keyframe [F, N, 3], zero at keyframe 0."""
        return torch.cat([torch.zeros_like(self.means)[None], self.offsets], 0)

    @property
    def scales(self) -> Tensor:
        return torch.exp(self.log_scales)

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.opacity_logits)

    @property
    def colours(self) -> Tensor:
        return torch.sigmoid(self.colour_logits)

    @torch.no_grad()
    def rebuild(self, source: Tensor, optimizer: torch.optim.Optimizer | None = None, **overrides: Tensor) -> None:
        """Replace every parameter by its rows ``source`` [N'] (an index into the current rows,
        repeats allowed), then apply ``overrides`` (full new tensors, e.g. split scales). Adam
        moments follow their rows; rows given in overrides keep the moments of their source."""
        for name in GAUSSIAN_PARAMS:
            old = getattr(self, name)
            dim = ROW_DIM.get(name, 0)
            new = overrides.get(name, old.data.index_select(dim, source)).clone()
            param = nn.Parameter(new)
            if optimizer is not None:
                for group in optimizer.param_groups:
                    for i, p in enumerate(group["params"]):
                        if p is old:
                            group["params"][i] = param
                            state = optimizer.state.pop(old, None)
                            if state:
                                optimizer.state[param] = {
                                    k: (v.index_select(dim, source).clone() if torch.is_tensor(v) and v.dim() > 0 else v)
                                    for k, v in state.items()
                                }
            setattr(self, name, param)
