"""Evaluation: batching changes nothing, and every prediction is kept on disk."""

from __future__ import annotations

from engine_fixtures import quick_lora, read_jsonl

from hicl_app.core.taskfile import load_records
from hicl_app.engine.config import EvalConfig
from hicl_app.engine.eval.evaluate import evaluate_task
from hicl_app.engine.eval.generate import generate_answers


def test_batched_generation_equals_one_by_one(tiny_base_dir, cl_tasks):
    train = load_records(cl_tasks["color"].train_path)
    loaded, model = quick_lora(tiny_base_dir, train, steps=25)
    test = load_records(cl_tasks["color"].test_path)[:12]
    # prompts of different lengths (history turns) so left padding really happens
    for i, r in enumerate(test[::3]):
        r["history"] = [["What shape is in the image?", "circle"]] * (i + 1)
    kw = dict(device=loaded.device, dtype=loaded.dtype)
    batched = generate_answers(model, loaded.processor, test, EvalConfig(batch_size=5, max_new_tokens=6), **kw)
    single = generate_answers(model, loaded.processor, test, EvalConfig(batch_size=1, max_new_tokens=6), **kw)
    assert batched == single, (batched, single)
    assert all(isinstance(p, str) for p in batched) and any(batched)


def test_evaluate_writes_predictions_and_scores(tiny_base_dir, cl_tasks, tmp_path):
    train = load_records(cl_tasks["bg"].train_path)
    loaded, model = quick_lora(tiny_base_dir, train, steps=60)
    test = load_records(cl_tasks["bg"].test_path)
    events = []
    out = evaluate_task(model, loaded.processor, test, "exact", EvalConfig(batch_size=8, max_new_tokens=4),
                        tmp_path / "preds" / "bg.jsonl", device=loaded.device, dtype=loaded.dtype, task="bg",
                        on_event=events.append)
    rows = read_jsonl(out["predictions_path"])
    assert out["n"] == len(test) == len(rows)
    assert [r["id"] for r in rows] == [r["id"] for r in test]
    assert set(rows[0]) == {"id", "question", "prediction", "reference", "score"}
    assert out["score"] == 100.0 * sum(r["score"] for r in rows) / len(rows)
    assert out["score"] >= 80, out  # a background-colour question is learnt in 60 LoRA steps
    assert events[-1] == {"type": "eval", "task": "bg", "done": len(test), "total": len(test)}
