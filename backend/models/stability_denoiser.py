"""One ``SequenceDenoiser`` for Stability's video UNets (SVD, SVD-XT, SV3D_p).

For B sequences x [B, T, C, h, w] at noise levels sigma [B] it does what generative-models'
``Denoiser`` + ``VideoUNet`` + a prediction guider do:

    c_skip, c_out, c_in, c_noise = VScalingWithEDMcNoise(sigma)
    F  = net([c_in * x | z_cond], c_noise, clip_context, vector)            (per frame)
    x0 = c_skip * x + c_out * F
    x0 = x0_u + s[t] * (x0_c - x0_u)     (unconditional pass: CLIP context and z_cond zeroed)

Subclasses say what the per-frame vector is (``frame_vector``) and, for SV3D, in which order the
frames go through the network (``frame_order``). Network calls are split into chunks of at most
``max_batch`` sequences (conditional and unconditional passes share chunks); results do not depend
on the chunking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from backend.errors import InvalidInput
from backend.models.base import Cond, EDMScaling
from backend.models.guidance import Guidance, guide
from backend.models.stability_encoders import LATENT_SPACE, ConditionEncoder
from backend.models.video_unet import VideoUNet


@dataclass
class Prepared:
    """A Cond turned into network inputs for a sequence of T frames.

    order: LongTensor [T] (network frame i is sequence frame order[i]) or None for identity;
    context: [1, D]; latent: [C, h, w] unscaled condition latent; vector: [T, k] in network order.
    """

    order: Tensor | None
    context: Tensor
    latent: Tensor
    vector: Tensor


class StabilityVideoDenoiser:
    """Base adapter; see the module docstring. Not used directly: ``SVDDenoiser`` / ``SV3DDenoiser``."""

    latent_space = LATENT_SPACE
    name = "stability"
    sequence_field = "frames"  # what a sequence runs over, for error messages

    def __init__(self, net: VideoUNet, encoder: ConditionEncoder | None, *, latent_shape: tuple[int, int, int],
                 seq_len: int, max_frames: int | None = None, guidance: Guidance = Guidance("none"),
                 cond_aug: float = 0.02, max_batch: int | None = None):
        self.net = net.eval()
        self.encoder = encoder
        self.latent_shape = tuple(int(v) for v in latent_shape)
        self.seq_len = int(seq_len)
        self.max_frames = int(max_frames if max_frames is not None else seq_len)
        self.default_guidance = guidance if isinstance(guidance, Guidance) else None
        self.guidance = guidance
        self.cond_aug = float(cond_aug)
        self.max_batch = max_batch
        self.scaling = EDMScaling("v")
        self.calls = 0  # network evaluations (chunks), for tests and benchmarks
        self.sequences = 0

    @property
    def guidance(self) -> Guidance:
        """Classifier-free guidance. Assign a ``Guidance``, or a number s (a job's guidance scale, as
        the pipeline does): s becomes the peak scale of this model's own shape (SVD's ramp, SV3D's
        triangle), min_scale capped at s; s = 1 means no guidance (one pass)."""
        return self._guidance

    @guidance.setter
    def guidance(self, value) -> None:
        if isinstance(value, Guidance):
            self._guidance = value
            return
        try:
            s = float(value)
        except (TypeError, ValueError) as exc:
            raise InvalidInput("guidance", f"expected a Guidance or a scale, got {value!r}") from exc
        base = getattr(self, "default_guidance", None) or Guidance("none")
        if s == 1.0 or base.kind == "none":
            self._guidance = Guidance("none") if s == 1.0 else Guidance("linear", s, s, base.sigma_range)
        else:
            self._guidance = Guidance(base.kind, min(base.min_scale, s), s, base.sigma_range)

    # -- hooks -------------------------------------------------------------------------------
    def frame_vector(self, cond: Cond, T: int, order: Tensor | None) -> Tensor:
        """Per-frame vector conditioning [T, k] in network order."""
        raise NotImplementedError

    def frame_order(self, cond: Cond, T: int, field: str) -> Tensor | None:
        """Network order of the sequence's frames, or None to keep it."""
        return None

    # -- SequenceDenoiser --------------------------------------------------------------------
    def check_sequence(self, seq_len: int, conds: Sequence[Cond]) -> None:
        """Refuse sequences the model cannot take, before any network call."""
        if not 1 <= int(seq_len) <= self.max_frames:
            raise InvalidInput(self.sequence_field, f"{self.name} takes 1 to {self.max_frames} {self.sequence_field} "
                                                    f"per sequence, got {seq_len}")
        for j, c in enumerate(conds):
            if c.image is None and c.latent is None:
                raise InvalidInput(f"conds[{j}].image", f"{self.name} needs each sequence's conditioning image")
            self.frame_order(c, int(seq_len), f"conds[{j}]")

    def prepare(self, cond: Cond, T: int, field: str = "cond") -> Prepared:
        order = self.frame_order(cond, T, field)
        cond_aug = float((cond.extra or {}).get("cond_aug", self.cond_aug))
        if self.encoder is None:
            raise InvalidInput("encoder", f"{self.name} was built without image encoders")
        context, latent = self.encoder(cond, cond_aug, field)
        return Prepared(order, context, latent, self.frame_vector(cond, T, order))

    @torch.no_grad()
    def denoise(self, x: Tensor, sigma: Tensor, conds: Sequence[Cond]) -> Tensor:
        """x [B, T, C, h, w] at sigma [B] -> x0 [B, T, C, h, w] (same dtype and device as x)."""
        B, T = int(x.shape[0]), int(x.shape[1])
        if tuple(x.shape[2:]) != self.latent_shape:
            raise InvalidInput("x", f"{self.name} expects latents {self.latent_shape}, got {tuple(x.shape[2:])}")
        if len(conds) != B:
            raise InvalidInput("conds", f"expected {B} conditions, got {len(conds)}")
        self.check_sequence(T, conds)
        if B == 0:
            return x.clone()
        dev = self.net.device
        preps = [self.prepare(c, T, f"conds[{j}]") for j, c in enumerate(conds)]
        xs = x.to(dev, torch.float32)
        orders = [p.order for p in preps]
        if any(o is not None for o in orders):
            xs = torch.stack([xs[b] if o is None else xs[b, o.to(dev)] for b, o in enumerate(orders)])
        c_skip, c_out, c_in, c_noise = self.scaling(sigma.to(dev))
        shape = (B, 1, 1, 1, 1)
        net_in = xs * c_in.view(shape)
        latents = torch.stack([p.latent for p in preps]).to(dev)  # [B, C, h, w]
        contexts = torch.stack([p.context for p in preps]).to(dev)  # [B, 1, D]
        vectors = torch.stack([p.vector for p in preps]).to(dev)  # [B, T, k]
        guided = torch.tensor([self.guidance.active(T, float(s)) for s in sigma], device=dev)
        g = guided.nonzero().flatten()  # sequences that also get an unconditional pass (first, as Stability's)
        if len(g):
            net_in = torch.cat([net_in[g], net_in])
            latents = torch.cat([torch.zeros_like(latents[g]), latents])
            contexts = torch.cat([torch.zeros_like(contexts[g]), contexts])
            vectors = torch.cat([vectors[g], vectors])
            c_noise = torch.cat([c_noise[g], c_noise])
        out = self.run_network(net_in, latents, c_noise, contexts, vectors)
        out_u, out_c = out[:len(g)], out[len(g):]
        x0 = self._x0(xs, out_c, c_skip, c_out)
        if len(g):
            x0_u = self._x0(xs[g], out_u, c_skip[g], c_out[g])
            x0[g] = guide(x0_u, x0[g], self.guidance.scales(T))
        if any(o is not None for o in orders):
            restored = torch.empty_like(x0)
            for b, o in enumerate(orders):
                if o is None:
                    restored[b] = x0[b]
                else:
                    restored[b, o.to(dev)] = x0[b]
            x0 = restored
        return x0.to(device=x.device, dtype=x.dtype)

    @staticmethod
    def _x0(x: Tensor, out: Tensor, c_skip: Tensor, c_out: Tensor) -> Tensor:
        shape = (-1, 1, 1, 1, 1)
        return c_skip.view(shape) * x + c_out.view(shape) * out

    def run_network(self, net_in: Tensor, latents: Tensor, c_noise: Tensor, contexts: Tensor,
                    vectors: Tensor) -> Tensor:
        """net_in [S, T, C, h, w] (already times c_in), latents [S, C, h, w], c_noise [S], contexts [S, 1, D],
        vectors [S, T, k] -> network output [S, T, C_out, h, w] float32, in chunks of max_batch sequences."""
        S, T = net_in.shape[:2]
        step = S if not self.max_batch else int(self.max_batch)
        outs = []
        for i in range(0, S, step):
            sl = slice(i, i + step)
            n = net_in[sl].shape[0]
            z = latents[sl][:, None].expand(n, T, *latents.shape[1:])
            inp = torch.cat([net_in[sl], z], dim=2).flatten(0, 1)
            out = self.net.run(inp, c_noise[sl], contexts[sl], vectors[sl].flatten(0, 1), num_frames=T)
            outs.append(out.float().reshape(n, T, *out.shape[1:]))
            self.calls += 1
            self.sequences += n
        return torch.cat(outs)
