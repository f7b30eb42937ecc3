"""hide and llava-c on two ranks (torchrun, gloo) end where one process ends: the same adapters,
the same extra state (HiDe's experts and anchors, LLaVA-c's consolidated deltas) and scores."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from hicl_app.engine.config import EvalConfig, ModelConfig, TrainConfig
from hicl_app.engine.distributed.launch import run_stage_distributed
from hicl_app.engine.pipeline import StageSpec, run_stage

ORDER = ["color", "bg"]
TOL = 1e-4


def _run(base, tasks, root, method, nproc):
    prev, results = None, []
    for k, name in enumerate(ORDER):
        spec = StageSpec(method=method, method_options={}, stage_index=k, n_stages=len(ORDER),
                         train_tasks=[tasks[name]], eval_tasks=[tasks[n] for n in ORDER[:k + 1]],
                         model=ModelConfig(str(base), device="cpu"),
                         train=TrainConfig(max_steps=12, lr=1e-3, batch_size=7, checkpoint_every=5, dropout=0.0),
                         eval=EvalConfig(batch_size=16, max_new_tokens=4), stage_dir=root / f"stage-{k}",
                         prev_stage_dir=prev, checkpoint_dir=root / "ckpt" / f"stage-{k}")
        results.append(run_stage(spec) if nproc == 1 else run_stage_distributed(spec, nproc))
        prev = spec.stage_dir
    return results


def _rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / max(float(a.float().norm()), 1e-12))


def _compare(one, two, rel_file: str, *, factors: bool = False) -> float:
    a, b = load_file(one / rel_file), load_file(two / rel_file)
    assert a.keys() == b.keys()
    if not factors:
        return max(_rel(a[k], b[k]) for k in a)
    # SVD factors are defined up to a rotation inside near-tied singular values: compare U S Vᵀ
    return max(_rel(a[k] @ a[k[:-3] + ".vt"], b[k] @ b[k[:-3] + ".vt"]) for k in a if k.endswith(".us"))


@pytest.mark.parametrize("method, state", [("hide", ["hide/experts.safetensors", "hide/anchors.safetensors"]),
                                           ("llava-c", ["sac/consolidated.safetensors"])])
def test_two_ranks_match_one_process(method, state, tiny_base_dir, cl_tasks, tmp_path):
    one = _run(tiny_base_dir, cl_tasks, tmp_path / "one", method, 1)
    two = _run(tiny_base_dir, cl_tasks, tmp_path / "two", method, 2)
    for k in range(len(ORDER)):
        a, b = tmp_path / "one" / f"stage-{k}", tmp_path / "two" / f"stage-{k}"
        assert _compare(a, b, "adapter/adapter_model.safetensors") < TOL
        for rel_file in state:
            assert _compare(a, b, rel_file, factors=rel_file.startswith("sac/")) < TOL, rel_file
        assert {n: s["score"] for n, s in one[k].scores.items()} == {n: s["score"] for n, s in two[k].scores.items()}
        assert two[k].env["world_size"] == 2 and two[k].steps == one[k].steps
        assert (b / "predictions" / f"{ORDER[0]}.jsonl").read_text() == (a / "predictions" / f"{ORDER[0]}.jsonl").read_text()
