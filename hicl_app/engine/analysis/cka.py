"""Centered Kernel Alignment between two sets of features of the same n inputs.

Linear CKA(X, Y) = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) on column-centred X (n×d₁), Y (n×d₂), computed
in the Gram form (⟨K, L⟩ of the n×n Gram matrices, which equals ‖YᵀX‖²_F) when the features
are wider than the sample, the feature form otherwise: the two are the same number.
RBF CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with HSIC(K, L) = ⟨HKH, HLH⟩ and
K_ij = exp(−‖x_i − x_j‖² / (2σ²)), σ² = the median of the non-zero squared distances.
Both are invariant to orthogonal transforms and isotropic scaling of either side; linear CKA
also to adding a constant. Everything runs in float64: the numbers are ratios of large sums.
A side with no variance (all rows equal) has no defined CKA: the result is nan.
"""

from __future__ import annotations

import math

import torch

from ..errors import EngineError

KERNELS = ("linear", "rbf")


def _check(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dim() != 2 or y.dim() != 2:
        raise EngineError(f"CKA needs 2-D features (samples × dims), got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise EngineError(f"CKA needs the same inputs on both sides: {x.shape[0]} vs {y.shape[0]} samples")
    if x.shape[0] < 2:
        raise EngineError("CKA needs at least 2 samples")
    return x.detach().to(torch.float64), y.detach().to(torch.float64)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> float:
    den_v = float(den)
    if not math.isfinite(den_v) or den_v <= 1e-300:
        return float("nan")
    return float(num) / den_v


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of features x (n×d₁) and y (n×d₂) of the same n inputs."""
    x, y = _check(x, y)
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    if max(x.shape[1], y.shape[1]) > x.shape[0]:  # Gram form: n×n instead of d×d
        k, l_ = x @ x.T, y @ y.T
        return _ratio((k * l_).sum(), torch.linalg.norm(k) * torch.linalg.norm(l_))
    cross = torch.linalg.norm(y.T @ x) ** 2
    return _ratio(cross, torch.linalg.norm(x.T @ x) * torch.linalg.norm(y.T @ y))


def _rbf_gram(x: torch.Tensor) -> torch.Tensor:
    sq = (x * x).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)
    d2.fill_diagonal_(0.0)
    nonzero = d2[d2 > 0]
    if nonzero.numel() == 0:  # every row equal: a constant kernel, centred to zero below
        return torch.ones_like(d2)
    sigma2 = nonzero.median()
    return torch.exp(-d2 / (2.0 * sigma2))


def _centre(k: torch.Tensor) -> torch.Tensor:
    return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()


def rbf_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """RBF-kernel CKA, σ from the median heuristic on each side separately."""
    x, y = _check(x, y)
    k, l_ = _centre(_rbf_gram(x)), _centre(_rbf_gram(y))
    return _ratio((k * l_).sum(), torch.linalg.norm(k) * torch.linalg.norm(l_))


def cka(x: torch.Tensor, y: torch.Tensor, kernel: str = "linear") -> float:
    if kernel == "linear":
        return linear_cka(x, y)
    if kernel == "rbf":
        return rbf_cka(x, y)
    raise EngineError(f"unknown CKA kernel {kernel!r}", hint=f"use one of {', '.join(KERNELS)}")


def cka_matrix(features: list[torch.Tensor], kernel: str = "linear") -> list[list[float]]:
    """Symmetric matrix of CKA between every pair of feature sets (1 on the diagonal, nan for a
    set with no variance)."""
    n = len(features)
    out = [[float("nan")] * n for _ in range(n)]
    for i in range(n):
        out[i][i] = cka(features[i], features[i], kernel)
        for j in range(i + 1, n):
            out[i][j] = out[j][i] = cka(features[i], features[j], kernel)
    return out


def mean_cross(matrix: list[list[float]]) -> float:
    """Mean of the off-diagonal cells (nan for a 1×1 matrix: no pair to compare)."""
    cells = [v for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j]
    return sum(cells) / len(cells) if cells else float("nan")
