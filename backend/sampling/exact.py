"""Closed-form output covariance of the composed sampler for linear (Gaussian) denoisers.

Vectorise the matrix as x = vec(I) with entries ordered (v, f, channel...). With linear x0 maps,
each sampler sub-step is x <- A x (+ injected noise for VRS), so Cov <- A Cov A^T (+ q I).
This mirrors ``sample_matrix`` step for step but is derived independently from the covariances,
so agreement between the two checks the sampler.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from backend.sampling.schedules import WeightSchedule, weights_per_view


def embed_rows(row_map: Callable[[int], Tensor], V: int, F: int, d: int) -> Tensor:
    """Full [N, N] map applying row_map(v) [F*d, F*d] to every row v (block diagonal)."""
    blocks = [row_map(v) for v in range(V)]
    return torch.block_diag(*blocks)


def embed_cols(col_map: Callable[[int], Tensor], V: int, F: int, d: int) -> Tensor:
    """Full [N, N] map applying col_map(f) [V*d, V*d] to every column f."""
    N = V * F * d
    M = torch.zeros(N, N, dtype=torch.float64)
    for f in range(F):
        idx = torch.tensor([(v * F + f) * d + c for v in range(V) for c in range(d)])
        M[idx[:, None], idx[None, :]] = col_map(f)
    return M


def embed_entries(entry_map: Callable[[int, int], Tensor], V: int, F: int, d: int) -> Tensor:
    """Full [N, N] map applying entry_map(v, f) [d, d] to every entry."""
    return torch.block_diag(*[entry_map(v, f) for v in range(V) for f in range(F)])


def x0_operator(row_map, col_map, V, F, d, *, w: Tensor | None = None, entry_map=None, joint_map: Tensor | None = None) -> Tensor:
    """The composed x0 as a matrix [N, N]: convex (w [V]), theorem (entry_map given) or joint (joint_map)."""
    if joint_map is not None:
        return joint_map
    R = embed_rows(row_map, V, F, d)
    C = embed_cols(col_map, V, F, d)
    if entry_map is not None:
        return R + C - embed_entries(entry_map, V, F, d)
    wv = w.to(torch.float64).repeat_interleave(F * d)  # per vector entry
    return wv[:, None] * C + (1 - wv)[:, None] * R


def output_covariance(
    sigmas: Tensor,
    x0_at: Callable[[float, int], Tensor],
    N: int,
    *,
    vrs_steps: int = 0,
    vrs_repeats: int = 1,
) -> Tensor:
    """Propagate Cov = sigma_0^2 I through the Euler steps. x0_at(sigma, step) -> [N, N]. Returns [N, N]."""
    sig = [float(s) for s in sigmas]
    eye = torch.eye(N, dtype=torch.float64)
    cov = sig[0] ** 2 * eye
    for i in range(len(sig) - 1):
        s, sn = sig[i], sig[i + 1]
        A = eye + (sn - s) / s * (eye - x0_at(s, i))
        repeats = vrs_repeats if i < vrs_steps else 1
        for r in range(repeats):
            cov = A @ cov @ A.T
            if r < repeats - 1:
                cov = cov + (s**2 - sn**2) * eye
    return cov


def composed_covariance(sigmas: Tensor, row_model, col_model, V: int, F: int, d: int, *,
                        weight: WeightSchedule | float | None = None, element_model=None, joint_model=None,
                        row_index=lambda v: 0, col_index=lambda f: 0, vrs_steps: int = 0, vrs_repeats: int = 1) -> Tensor:
    """Exact output covariance [N, N] of ``sample_matrix`` with ``GaussianDenoiser`` models.

    Exactly one of ``weight`` (convex), ``element_model`` (theorem) or ``joint_model`` (a single
    GaussianDenoiser over the whole flattened matrix: the exact joint sampler) selects the mode.
    """
    num_steps = len(sigmas) - 1

    def x0_at(sigma: float, step: int) -> Tensor:
        if joint_model is not None:
            return joint_model.matrix(sigma)
        rows = lambda v: row_model.matrix(sigma, row_index(v))
        cols = lambda f: col_model.matrix(sigma, col_index(f))
        if element_model is not None:
            entry = lambda v, f: element_model.matrix(sigma, row_index(v))
            return x0_operator(rows, cols, V, F, d, entry_map=entry)
        w = weights_per_view(weight, step, num_steps, V)
        return x0_operator(rows, cols, V, F, d, w=w)

    return output_covariance(sigmas, x0_at, V * F * d, vrs_steps=vrs_steps, vrs_repeats=vrs_repeats)


def relative_error(cov: Tensor, target: Tensor) -> float:
    """Relative Frobenius error ||cov - target|| / ||target||."""
    return float(torch.linalg.norm(cov - target) / torch.linalg.norm(target))


def monte_carlo_error(cov: Tensor, n: int) -> float:
    """Expected Frobenius norm of the error of an n-sample covariance estimate of a zero-mean Gaussian
    with covariance ``cov``: sqrt(sum_ij (C_ii C_jj + C_ij^2) / n)."""
    d = torch.diag(cov)
    return float(((d[:, None] * d[None, :] + cov**2).sum() / n).sqrt())


class MatrixNormalProblem:
    """A V x F matrix of C-vectors with covariance Sigma_views (x) Sigma_frames (x) Sigma_channels.

    Rows and columns of a matrix-normal are exactly its marginals, so the row, column and one-entry
    models are exact; ``joint`` denoises the whole matrix at once (the exact joint sampler). Views
    are correlated around a circle (an orbit), frames as an AR(1) process (a video). Latents have
    shape (C, 1, pixels): each pixel is an independent draw, so one sampler run gives ``pixels`` samples.
    """

    def __init__(self, V: int = 4, F: int = 5, rho_views: float = 0.7, rho_frames: float = 0.7,
                 channels: Tensor | None = None, pixels: int = 1):
        from backend.models.gaussian import GaussianDenoiser, ar1_correlation, circular_correlation

        self.V, self.F = V, F
        self.channels = channels if channels is not None else torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
        self.C = self.channels.shape[0]
        latent = (self.C, 1, pixels)
        sv, sf = circular_correlation(V, rho_views), ar1_correlation(F, rho_frames)
        self.target = torch.kron(torch.kron(sv, sf), self.channels)  # ordering (v, f, c)
        self.rows = GaussianDenoiser(torch.kron(sf, self.channels), F, latent)
        self.cols = GaussianDenoiser(torch.kron(sv, self.channels), V, latent)
        self.element = GaussianDenoiser(self.channels, 1, latent)
        self.joint = GaussianDenoiser(self.target, V * F, (self.C, 1, 1))

    def covariance(self, sigmas: Tensor, **mode) -> Tensor:
        """Closed-form output covariance; mode = weight=..., element_model=..., or joint_model=..."""
        return composed_covariance(sigmas, self.rows, self.cols, self.V, self.F, self.C, **mode)

    def empirical(self, samples: Tensor) -> Tensor:
        """Covariance [N, N] from sampler output [V, F, C, 1, pixels] (zero mean known)."""
        flat = samples.reshape(self.V * self.F * self.C, -1)
        return flat @ flat.T / flat.shape[1]
