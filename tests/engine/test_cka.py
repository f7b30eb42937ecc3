"""CKA: the direct formulas, identity, and the invariances that make it a similarity of representations."""

from __future__ import annotations

import math

import pytest
import torch

from hicl_app.engine.analysis.cka import cka, cka_matrix, linear_cka, mean_cross, rbf_cka
from hicl_app.engine.errors import EngineError


def _rand(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _orthogonal(d, seed):
    q, _ = torch.linalg.qr(_rand(d, d, seed))
    return q


def direct_linear(x, y):
    """‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) on column-centred features, straight from the definition."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    return float(torch.linalg.norm(y.T @ x) ** 2 / (torch.linalg.norm(x.T @ x) * torch.linalg.norm(y.T @ y)))


def direct_rbf(x, y):
    """HSIC of centred RBF kernels (σ² = median non-zero squared distance), normalised."""
    def gram(z):
        n = z.shape[0]
        d2 = torch.tensor([[float(((z[i] - z[j]) ** 2).sum()) for j in range(n)] for i in range(n)], dtype=torch.float64)
        sigma2 = d2[d2 > 0].median()
        return torch.exp(-d2 / (2 * sigma2))

    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - torch.full((n, n), 1.0 / n, dtype=torch.float64)
    k, l_ = h @ gram(x) @ h, h @ gram(y) @ h
    hsic = lambda a, b: float(torch.trace(a @ b))  # noqa: E731
    return hsic(k, l_) / math.sqrt(hsic(k, k) * hsic(l_, l_))


@pytest.mark.parametrize("n, dx, dy", [(40, 8, 5), (12, 30, 50)])  # feature form and Gram form
def test_linear_cka_equals_the_direct_formula(n, dx, dy):
    x, y = _rand(n, dx, 1), _rand(n, dy, 2)
    y = y + 0.5 * x[:, :1]  # some shared signal, so the value is not near zero
    assert linear_cka(x, y) == pytest.approx(direct_linear(x, y), rel=1e-10)
    assert 0.0 <= linear_cka(x, y) <= 1.0


def test_rbf_cka_equals_the_direct_formula():
    x, y = _rand(20, 6, 3), _rand(20, 4, 4)
    y[:, 0] += x[:, 0]
    assert rbf_cka(x, y) == pytest.approx(direct_rbf(x, y), rel=1e-10)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_identical_features_give_one(kernel):
    x = _rand(30, 16, 5)
    assert cka(x, x, kernel) == pytest.approx(1.0, abs=1e-12)
    assert cka(x.float(), x.float().clone(), kernel) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_invariant_to_orthogonal_transform_and_isotropic_scaling(kernel):
    x, y = _rand(25, 10, 6), _rand(25, 10, 7)
    y = y + x @ _rand(10, 10, 8) * 0.3
    ref = cka(x, y, kernel)
    assert 0.05 < ref < 0.99
    q = _orthogonal(10, 9)
    assert cka(x @ q, y, kernel) == pytest.approx(ref, rel=1e-9)
    assert cka(x, y @ _orthogonal(10, 10), kernel) == pytest.approx(ref, rel=1e-9)
    assert cka(3.7 * x, 0.02 * y, kernel) == pytest.approx(ref, rel=1e-9)
    # ...but not to an arbitrary (non-isotropic) linear map, or the tests above would prove nothing
    assert cka(x * torch.linspace(0.1, 5, 10, dtype=torch.float64), y, kernel) != pytest.approx(ref, rel=1e-3)


def test_linear_cka_ignores_a_constant_shift():
    x, y = _rand(25, 6, 11), _rand(25, 6, 12)
    assert linear_cka(x + 4.0, y - 2.0) == pytest.approx(linear_cka(x, y), rel=1e-10)


def test_matrix_is_symmetric_with_unit_diagonal_and_mean_cross():
    feats = [_rand(15, 8, s) for s in range(3)]
    m = cka_matrix(feats)
    assert all(m[i][i] == pytest.approx(1.0) for i in range(3))
    assert all(m[i][j] == m[j][i] for i in range(3) for j in range(3))
    assert mean_cross(m) == pytest.approx((m[0][1] + m[0][2] + m[1][2]) / 3)
    assert math.isnan(mean_cross([[1.0]]))


def test_constant_features_give_nan_and_bad_shapes_are_refused():
    x = _rand(10, 4, 13)
    assert math.isnan(linear_cka(torch.ones(10, 4), x))
    assert math.isnan(rbf_cka(torch.ones(10, 4), x))
    with pytest.raises(EngineError, match="same inputs"):
        linear_cka(x, _rand(9, 4, 14))
    with pytest.raises(EngineError, match="unknown CKA kernel"):
        cka(x, x, "cosine")
