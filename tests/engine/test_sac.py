"""Spectral-Aware Consolidation on hand-made deltas, and its streamed factor files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hicl_app.engine.errors import EngineError
from hicl_app.engine.methods.llava_c.sac import apply_factors, consolidate, consolidate_model, module_names, plain_add
from hicl_app.engine.modeling.tensorfile import StreamingWriter

D = 24


def _bases(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    r, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    return q, r


def _delta(u: torch.Tensor, v: torch.Tensor, sigma: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B', A) with B' A = u diag(sigma) vᵀ."""
    return u * torch.tensor(sigma, dtype=u.dtype), v.T.contiguous()


def _dense(f) -> torch.Tensor:
    return f[0].double() @ f[1].double()


def test_orthogonal_deltas_add_unchanged():
    q, r = _bases()
    d1 = _delta(q[:, :2], r[:, :2], [3.0, 1.0])
    d2 = _delta(q[:, 2:5], r[:, 2:5], [2.0, 0.5, 0.25])
    first, s1 = consolidate(None, d1, gamma=1.0, rank=8)
    second, s2 = consolidate(first, d2, gamma=1.0, rank=8)
    assert torch.allclose(_dense(first), _dense(d1), atol=1e-6)
    assert torch.allclose(_dense(second), _dense(d1) + _dense(d2), atol=1e-6)
    assert s2.rank == 5 and s2.overlap == pytest.approx(0.0, abs=1e-9) and s2.energy_kept == pytest.approx(1.0)


def test_identical_deltas_are_not_doubled():
    g = torch.Generator().manual_seed(1)
    delta = (torch.randn(D, 4, generator=g, dtype=torch.float64), torch.randn(4, D, generator=g, dtype=torch.float64))
    first, _ = consolidate(None, delta, gamma=1.0, rank=8)
    second, stats = consolidate(first, delta, gamma=1.0, rank=8)
    assert torch.allclose(_dense(second), _dense(delta), atol=1e-5)
    assert stats.overlap == pytest.approx(1.0, abs=1e-6)
    # gamma 0 switches the calibration off: then they do add up
    summed, _ = consolidate(first, delta, gamma=0.0, rank=8)
    assert torch.allclose(_dense(summed), 2 * _dense(delta), atol=1e-5)


def test_shared_direction_counts_once_private_ones_stay():
    q, r = _bases(2)
    shared = _dense(_delta(q[:, :1], r[:, :1], [2.0]))
    old_only = _dense(_delta(q[:, 1:2], r[:, 1:2], [1.5]))
    new_only = _dense(_delta(q[:, 2:3], r[:, 2:3], [1.0]))
    prev = _delta(q[:, :2], r[:, :2], [2.0, 1.5])  # shared + old_only
    new = _delta(torch.cat([q[:, :1], q[:, 2:3]], 1), torch.cat([r[:, :1], r[:, 2:3]], 1), [2.0, 1.0])
    out, _ = consolidate(prev, new, gamma=1.0, rank=8)
    assert torch.allclose(_dense(out), shared + old_only + new_only, atol=1e-6)
    # half-way calibration with gamma 0.5: the shared direction gets 4 / sqrt(2)
    half, _ = consolidate(prev, new, gamma=0.5, rank=8)
    assert torch.allclose(_dense(half), shared * 2 / 2 ** 0.5 + old_only + new_only, atol=1e-6)


@pytest.mark.parametrize("overlap", ["projection", "aligned"])
def test_both_overlap_measures_agree_on_the_clear_cases(overlap):
    q, r = _bases(3)
    d1 = _delta(q[:, :2], r[:, :2], [3.0, 1.0])
    d2 = _delta(q[:, 2:4], r[:, 2:4], [2.0, 0.5])
    first, _ = consolidate(None, d1, gamma=1.0, rank=8, overlap=overlap)
    orth, _ = consolidate(first, d2, gamma=1.0, rank=8, overlap=overlap)
    assert torch.allclose(_dense(orth), _dense(d1) + _dense(d2), atol=1e-6)
    same, stats = consolidate(first, d1, gamma=1.0, rank=8, overlap=overlap)
    assert torch.allclose(_dense(same), _dense(d1), atol=1e-6) and stats.overlap == pytest.approx(1.0, abs=1e-6)


def test_aligned_overlap_keeps_independent_tasks_that_only_tie_in_singular_value():
    q, r = _bases(4)
    # two tasks on orthogonal directions with the same singular value, one nudged into the other's
    # input space by a small shared component: the SVD of the sum mixes their directions
    d1 = _delta(q[:, :1], r[:, :1], [1.0])
    mixed_in = (r[:, 1:2] + 0.05 * r[:, :1]) / (1 + 0.05 ** 2) ** 0.5
    d2 = _delta(q[:, 1:2], mixed_in, [1.0])
    first, _ = consolidate(None, d1, gamma=1.0, rank=8)
    target = _dense(d1) + _dense(d2)
    by_projection, p_stats = consolidate(first, d2, gamma=1.0, rank=8, overlap="projection")
    aligned, a_stats = consolidate(first, d2, gamma=1.0, rank=8, overlap="aligned")
    assert p_stats.overlap > 0.4  # reads the two independent tasks as largely shared
    assert a_stats.overlap < 0.01
    assert (_dense(aligned) - target).norm() < 0.01 * target.norm()
    assert (_dense(by_projection) - target).norm() > 0.2 * target.norm()


def test_unknown_overlap_measure_is_refused():
    g = torch.Generator().manual_seed(5)
    delta = (torch.randn(D, 2, generator=g, dtype=torch.float64), torch.randn(2, D, generator=g, dtype=torch.float64))
    with pytest.raises(EngineError, match="overlap"):
        consolidate(None, delta, gamma=1.0, rank=4, overlap="cosine")


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_rank_bound_holds_over_many_tasks(gamma):
    g = torch.Generator().manual_seed(3)
    cons = None
    for _ in range(6):
        delta = (torch.randn(D, 4, generator=g, dtype=torch.float64), torch.randn(4, D, generator=g, dtype=torch.float64))
        before = cons
        cons, stats = consolidate(cons, delta, gamma=gamma, rank=6)
        assert cons[0].shape == (D, stats.rank) and cons[1].shape == (stats.rank, D)
        assert stats.rank <= 6 and torch.linalg.matrix_rank(_dense(cons)) <= 6
        assert cons[0].dtype == torch.float32
    assert stats.energy_kept < 1.0  # 6 random rank-4 tasks do not fit in rank 6
    if gamma == 0.0:  # no calibration: the best rank-6 approximation of the sum (Eckart-Young)
        total = _dense(before) + _dense(delta)
        u, s, vh = torch.linalg.svd(total)
        best = (u[:, :6] * s[:6]) @ vh[:6]
        assert torch.allclose(_dense(cons), best, atol=1e-4)


def test_plain_addition_is_exact_and_keeps_every_direction():
    g = torch.Generator().manual_seed(4)
    cons, total = None, torch.zeros(D, D, dtype=torch.float64)
    for _ in range(3):
        delta = (torch.randn(D, 4, generator=g, dtype=torch.float64), torch.randn(4, D, generator=g, dtype=torch.float64))
        cons, stats = plain_add(cons, delta)
        total += _dense(delta)
    assert stats.rank == 12 and torch.allclose(_dense(cons), total, atol=1e-5)


def test_zero_delta_leaves_the_consolidation_as_it_was():
    g = torch.Generator().manual_seed(5)
    delta = (torch.randn(D, 4, generator=g, dtype=torch.float64), torch.randn(4, D, generator=g, dtype=torch.float64))
    first, _ = consolidate(None, delta, gamma=1.0, rank=8)
    zero = (torch.zeros(D, 4, dtype=torch.float64), torch.randn(4, D, generator=g, dtype=torch.float64))
    again, stats = consolidate(first, zero, gamma=1.0, rank=8)
    assert stats.rank == 4 and torch.allclose(_dense(again), _dense(first), atol=1e-5)
    nothing, stats = consolidate(None, zero, gamma=1.0, rank=8)
    assert stats.rank == 0 and nothing[0].shape == (D, 0)


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.other = nn.Linear(D, 16), nn.Linear(16, D), nn.Linear(D, D)


def _toy_lora(seed: int, targets=("l1", "l2")):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = _Toy()
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=list(targets)))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g))
    return model


def _fresh():
    torch.manual_seed(0)
    return _Toy()


def test_consolidated_file_streams_and_merges_into_a_fresh_model(tmp_path):
    first, second = _toy_lora(1), _toy_lora(2)
    one = consolidate_model(first, None, tmp_path / "s0.safetensors", mode="sac", gamma=1.0, rank=8)
    two = consolidate_model(second, tmp_path / "s0.safetensors", tmp_path / "s1.safetensors",
                            mode="add", gamma=1.0, rank=8, metadata={"tasks": "2"})
    assert module_names(tmp_path / "s1.safetensors") == ["l1", "l2"]
    assert one.summary()["max_rank"] == 4 and two.summary()["max_rank"] == 8
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind

    merged = [m.merge_and_unload() for m in (_toy_lora(1), _toy_lora(2))]
    net = _fresh()
    assert apply_factors(net, tmp_path / "s1.safetensors") == 2
    x = torch.randn(3, D)
    base = _fresh()
    expected = merged[0].l1.weight + merged[1].l1.weight - base.l1.weight
    assert torch.allclose(net.l1.weight, expected, atol=1e-5)
    assert torch.equal(net.other.weight, base.other.weight)
    # swapping a stage's delta for the next one's gives the same weights as merging the next alone
    swap = _fresh()
    apply_factors(swap, tmp_path / "s0.safetensors")
    apply_factors(swap, tmp_path / "s1.safetensors", minus=tmp_path / "s0.safetensors")
    assert torch.allclose(swap.l2(swap.l1(x)), net.l2(net.l1(x)), atol=1e-5)


def test_bad_factor_files_are_refused(tmp_path):
    with pytest.raises(EngineError, match="missing"):
        apply_factors(_fresh(), tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(EngineError, match="cannot read"):
        apply_factors(_fresh(), tmp_path / "junk.safetensors")
    with StreamingWriter(tmp_path / "alien.safetensors") as w:
        w.add("l9.us", torch.ones(D, 1))
        w.add("l9.vt", torch.ones(1, D))
    with pytest.raises(EngineError, match="lacks"):
        apply_factors(_fresh(), tmp_path / "alien.safetensors")
    with StreamingWriter(tmp_path / "wrong.safetensors") as w:
        w.add("l1.us", torch.ones(3, 1))
        w.add("l1.vt", torch.ones(1, D))
    with pytest.raises(EngineError, match="do not fit"):
        apply_factors(_fresh(), tmp_path / "wrong.safetensors")


def test_streaming_writer_round_trip_and_failure(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = {"a": torch.randn(3, 5), "b": torch.arange(7, dtype=torch.int64), "c": torch.randn(2, 2).bfloat16(),
               "empty": torch.zeros(4, 0)}
    with StreamingWriter(tmp_path / "t.safetensors", {"k": "v"}) as w:
        for name, t in tensors.items():
            w.add(name, t)
    back = load_file(str(tmp_path / "t.safetensors"))
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors)
    with safe_open(str(tmp_path / "t.safetensors"), "pt") as fh:
        assert fh.metadata() == {"k": "v"}
    with pytest.raises(RuntimeError):
        with StreamingWriter(tmp_path / "t.safetensors") as w:
            w.add("x", torch.ones(2))
            raise RuntimeError("crash mid-way")
    assert torch.equal(load_file(str(tmp_path / "t.safetensors"))["a"], tensors["a"])  # old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]
    with pytest.raises(ValueError, match="twice"):
        with StreamingWriter(tmp_path / "u.safetensors") as w:
            w.add("x", torch.ones(2))
            w.add("x", torch.ones(2))
