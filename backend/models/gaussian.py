"""Exact denoisers for Gaussian data: the models whose answers are known in closed form.

If a sequence x is Gaussian N(0, S), the ideal x0 predictor at noise level sigma is linear:
D(x, sigma) = S (S + sigma^2 I)^-1 x. With such models every sampler step is a linear map, so the
sampler's output covariance can be computed exactly (``backend.sampling.exact``); tests and
``scripts/prove_exact.py`` use this to check the sampler.

Here S is the covariance over (frame, channel) of one pixel, [T*C, T*C]; pixels are independent
draws. A latent of shape (C, 1, P) therefore carries P independent samples in one sampler run.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from backend.models.base import Cond


class GaussianDenoiser:
    """Ideal denoiser for zero-mean Gaussian sequences, each pixel an independent draw.

    covs: [K, T*C, T*C] covariances over (frame, channel) of K sequence distributions. A Cond
    picks one with ``extra={"index": k}`` (default 0), so rows or columns can differ.
    """

    def __init__(self, covs: Tensor, seq_len: int, latent_shape: tuple[int, int, int],
                 latent_space: str = "gaussian-test"):
        covs = torch.as_tensor(covs, dtype=torch.float64)
        if covs.dim() == 2:
            covs = covs[None]
        n = seq_len * latent_shape[0]
        if tuple(covs.shape[1:]) != (n, n):
            raise ValueError(f"covariance must be [K, {n}, {n}] for seq_len={seq_len}, channels={latent_shape[0]}")
        self.covs = covs
        self.seq_len = seq_len
        self.latent_shape = tuple(latent_shape)
        self.latent_space = latent_space
        self.calls = 0  # network calls, for tests and benchmarks
        self.sequences = 0
        self._cache: dict[tuple[float, int], Tensor] = {}

    def matrix(self, sigma: float, index: int = 0) -> Tensor:
        """The linear x0 map S (S + sigma^2 I)^-1 over (frame, channel): float64 [T*C, T*C]."""
        key = (float(sigma), int(index))
        if key not in self._cache:
            S = self.covs[index]
            eye = torch.eye(S.shape[0], dtype=S.dtype)
            self._cache[key] = torch.linalg.solve(S + sigma**2 * eye, S, left=False)
        return self._cache[key]

    def denoise(self, x: Tensor, sigma: Tensor, conds: Sequence[Cond]) -> Tensor:
        B, T, C, h, w = x.shape
        if T != self.seq_len:
            raise ValueError(f"Gaussian denoiser expects sequences of {self.seq_len}, got {T}")
        self.calls += 1
        self.sequences += B
        flat = x.to(torch.float64).reshape(B, T * C, h * w)  # (frame, channel) x pixels
        maps = torch.stack([self.matrix(float(sigma[b]), int((conds[b].extra or {}).get("index", 0))) for b in range(B)])
        return torch.bmm(maps, flat).reshape(x.shape).to(x.dtype)


def ar1_correlation(n: int, rho: float) -> Tensor:
    """Correlation matrix [n, n] of a stationary AR(1) process: C[i, j] = rho ** |i - j|."""
    idx = torch.arange(n, dtype=torch.float64)
    return rho ** (idx[:, None] - idx[None, :]).abs()


def circular_correlation(n: int, rho: float) -> Tensor:
    """Correlation [n, n] for points on a circle (orbit views): rho ** (circular distance)."""
    idx = torch.arange(n)
    d = (idx[:, None] - idx[None, :]).abs()
    d = torch.minimum(d, n - d).to(torch.float64)
    return rho ** d


def random_covariance(n: int, generator: torch.Generator | None = None, jitter: float = 0.1) -> Tensor:
    """A random well-conditioned covariance [n, n] (float64)."""
    A = torch.randn(n, n, generator=generator, dtype=torch.float64) / n**0.5
    return A @ A.T + jitter * torch.eye(n, dtype=torch.float64)
