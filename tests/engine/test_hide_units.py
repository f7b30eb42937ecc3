"""HiDe building blocks on small tensors: routing, fusion formulas, the routed and fused hooks, options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hicl_app.engine.errors import EngineError
from hicl_app.engine.methods import get_method
from hicl_app.engine.methods.hide.experts import RoutingState, attach_routed
from hicl_app.engine.methods.hide.fusion import attach_fused, fused_delta, merge_into, ties_merge
from hicl_app.engine.methods.hide.model import resolve_expand
from hicl_app.engine.methods.hide.options import HideOptions
from hicl_app.engine.methods.hide.routing import route
from hicl_app.engine.modeling.lora_factors import Expert, truncate


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _expert(name, seed, shape=(6, 5), rank=2, scale=2.0, path="lin"):
    out_f, in_f = shape
    a = torch.randn(rank, in_f, generator=_g(seed))
    b = torch.randn(out_f, rank, generator=_g(seed + 100))
    return Expert(name, {path: (a, b)}, {path: scale})


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 6, bias=True)

    def forward(self, x):
        return self.lin(x)


# ---------------------------------------------------------------- routing

def test_routing_picks_the_right_task_on_clearly_separated_inputs():
    a_txt = torch.eye(4)[:3] * 5  # three tasks, orthogonal anchors
    a_img = torch.eye(4)[1:] * 2
    f_txt = torch.stack([a_txt[2] + 0.1, a_txt[0] * 0.3 + 0.05, a_txt[1]])
    f_img = torch.stack([a_img[2], a_img[0] + 0.2, a_img[1] * 7])
    w = route(f_img, f_txt, a_img, a_txt, tau=0.1)
    assert w.shape == (3, 3)
    assert torch.allclose(w.sum(1), torch.ones(3))
    assert w.argmax(1).tolist() == [2, 0, 1]
    assert (w.max(1).values > 0.99).all()


def test_routing_is_the_formula():
    f_img, f_txt = torch.randn(2, 3, generator=_g(1)), torch.randn(2, 4, generator=_g(2))
    a_img, a_txt = torch.randn(3, 3, generator=_g(3)), torch.randn(3, 4, generator=_g(4))
    cos = lambda u, v: float(u @ v / (u.norm() * v.norm()))  # noqa: E731
    s = torch.tensor([[(cos(f_img[b], a_img[t]) + cos(f_txt[b], a_txt[t])) / 2 for t in range(3)] for b in range(2)])
    assert torch.allclose(route(f_img, f_txt, a_img, a_txt, 0.25), torch.softmax(s / 0.25, 1), atol=1e-6)
    # no image: the instruction alone
    s_txt = torch.tensor([[cos(f_txt[b], a_txt[t]) for t in range(3)] for b in range(2)])
    assert torch.allclose(route(None, f_txt, a_img, a_txt, 0.25), torch.softmax(s_txt / 0.25, 1), atol=1e-6)


# ---------------------------------------------------------------- fusion formulas

def test_fusion_modes_match_their_formulas():
    experts = [_expert(f"t{i}", i) for i in range(3)]
    a = [e.factors["lin"][0] for e in experts]
    b = [e.factors["lin"][1] for e in experts]
    s = 2.0
    assert torch.allclose(fused_delta(experts, "lin", "sum"), s * (b[0] + b[1] + b[2]) @ (a[0] + a[1] + a[2]), atol=1e-5)
    mean = (s * b[0] @ a[0] + s * b[1] @ a[1] + s * b[2] @ a[2]) / 3
    assert torch.allclose(fused_delta(experts, "lin", "mean-delta"), mean, atol=1e-5)
    deltas = [s * bi @ ai for ai, bi in zip(a, b)]
    assert torch.allclose(fused_delta(experts, "lin", "ties", 0.5), ties_merge(deltas, 0.5))
    with pytest.raises(EngineError, match="unknown fusion"):
        fused_delta(experts, "lin", "average")


def test_ties_trims_elects_the_sign_and_averages_the_agreeing_entries():
    d1 = torch.tensor([[4.0, -1.0], [0.5, 3.0]])
    d2 = torch.tensor([[2.0, -6.0], [-0.2, -1.0]])
    d3 = torch.tensor([[-1.0, 5.0], [0.1, 2.0]])
    # density 0.5: each keeps its 2 largest |entries|
    #   d1 -> [[4, 0], [0, 3]]   d2 -> [[2, -6], [0, 0]]   d3 -> [[0, 5], [0, 2]]
    # sign of the sums: [[+, -], [0, +]]; disjoint mean of the agreeing entries:
    #   (0,0): (4+2)/2 = 3   (0,1): -6/1   (1,0): none -> 0   (1,1): (3+2)/2 = 2.5
    expected = torch.tensor([[3.0, -6.0], [0.0, 2.5]])
    assert torch.allclose(ties_merge([d1, d2, d3], 0.5), expected)
    assert torch.allclose(ties_merge([d1], 1.0), d1)  # nothing trimmed, one task: itself


# ---------------------------------------------------------------- hooks on a module

def test_routed_delta_mixes_experts_per_sample():
    torch.manual_seed(0)
    net = Net()
    experts = [_expert("t0", 1, rank=2, scale=2.0), _expert("t1", 2, rank=3, scale=0.5)]  # ranks may differ
    state = RoutingState(2)
    handles = attach_routed(net, experts, ["lin"], state)
    x = torch.randn(3, 4, 5, generator=_g(9))
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7]])
    state.weights = w
    y = net(x)
    plain = x @ net.lin.weight.T + net.lin.bias
    for i in range(3):
        delta = sum(w[i, e] * experts[e].delta("lin") for e in range(2))
        assert torch.allclose(y[i], plain[i] + x[i] @ delta.T, atol=1e-5)
    state.fixed = torch.tensor([0.0, 1.0])  # forced one expert for everyone
    assert torch.allclose(net(x), plain + x @ experts[1].delta("lin").T, atol=1e-5)
    for h in handles:
        h.remove()
    assert torch.allclose(net(x), plain)


def test_routed_layer_refuses_weights_of_another_batch():
    net = Net()
    state = RoutingState(1, weights=torch.ones(2, 1))
    attach_routed(net, [_expert("t0", 1)], ["lin"], state)
    with pytest.raises(EngineError, match="batch of 2"):
        net(torch.randn(3, 5))


@pytest.mark.parametrize("fusion", ["sum", "mean-delta", "ties"])
def test_merged_and_per_forward_fusion_give_the_same_outputs(fusion):
    torch.manual_seed(0)
    merged, hooked = Net(), Net()
    hooked.load_state_dict(merged.state_dict())
    experts = [_expert(f"t{i}", 10 + i) for i in range(3)]
    merge_into(merged, experts, ["lin"], fusion, 0.3)
    attach_fused(hooked, experts, ["lin"], fusion, 0.3)
    x = torch.randn(4, 5, generator=_g(3))
    assert torch.allclose(merged(x), hooked(x), atol=1e-5)
    assert not torch.allclose(merged(x), Net().lin(x))  # the fusion did change the layer


# ---------------------------------------------------------------- options

def test_options_are_validated():
    assert get_method("hide").options == HideOptions()
    assert get_method("hide", {"expert_rank": "2", "merge_fused": "false"}).options.expert_rank == 2  # CLI text
    for key, value, message in [("tau", 0, "tau must be > 0"), ("fusion", "avg", "one of sum, mean-delta, ties"),
                                ("expand", "top,1", "expand must be"), ("cka_kernel", "poly", "one of linear, rbf"),
                                ("merge_fused", "maybe", "true or false"), ("probe_samples", 1, "probe_samples"),
                                ("router_encoder", "/no/such/folder", "no config.json"),
                                ("expert_rank", -1, "expert_rank must be >= 0"), ("expert_rank", 2.5, "integer")]:
        with pytest.raises(EngineError, match=message):
            get_method("hide", {key: value})

    with pytest.raises(EngineError, match="expert_init=previous"):
        get_method("hide", {"expert_rank": 2, "expert_init": "previous"})


def test_truncate_keeps_the_best_rank_k_approximation_of_each_delta():
    e = _expert("t", 3, shape=(7, 6), rank=4)
    a, b = e.factors["lin"]
    s = torch.linalg.svdvals((b @ a).double())
    cut = truncate(e, 2)
    energy = cut.energy_kept
    a2, b2 = cut.factors["lin"]
    assert a2.shape == (2, 6) and b2.shape == (7, 2) and cut.scales == e.scales
    # Eckart-Young: the error is the dropped singular values, no rank-2 matrix does better
    err = torch.linalg.matrix_norm((b @ a - b2 @ a2).double())
    assert err == pytest.approx(float(s[2:].square().sum().sqrt()), rel=1e-5)
    assert energy == pytest.approx(float(s[:2].square().sum() / s.square().sum()), rel=1e-6)
    assert cut.energy_kept == energy < 1
    same = truncate(e, 4)  # at the trained rank already: untouched
    assert torch.equal(same.factors["lin"][0], a) and same.energy_kept == 1.0


def test_expand_resolution():
    assert resolve_expand("top", 4) == [3]
    assert resolve_expand("auto", 4) is None
    assert resolve_expand("0, -1,3", 4) == [0, 3]
    with pytest.raises(EngineError, match="out of range"):
        resolve_expand("4", 4)


def test_an_expert_round_trips_through_peft_and_seeds_a_new_lora():
    from peft import LoraConfig, get_peft_model

    from hicl_app.engine.modeling.lora_factors import copy_into, from_peft

    torch.manual_seed(0)
    trained = get_peft_model(Net(), LoraConfig(r=2, lora_alpha=4, target_modules=["lin"]))
    with torch.no_grad():
        trained.base_model.model.lin.lora_B["default"].weight.normal_()
    expert = from_peft(trained, "t0")
    assert set(expert.factors) == {"lin"} and expert.scales["lin"] == 2.0
    fresh = get_peft_model(Net(), LoraConfig(r=2, lora_alpha=4, target_modules=["lin"]))
    copy_into(fresh, expert)  # expert_init=previous
    assert torch.equal(fresh.base_model.model.lin.lora_A["default"].weight, expert.factors["lin"][0])
    assert torch.equal(fresh.base_model.model.lin.lora_B["default"].weight, expert.factors["lin"][1])
    other_rank = get_peft_model(Net(), LoraConfig(r=3, lora_alpha=6, target_modules=["lin"]))
    with pytest.raises(EngineError, match="another rank or scale"):
        copy_into(other_rank, expert)
