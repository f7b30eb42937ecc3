"""What a new user meets first on the CLI: exit codes, the run's defaults and presets, the base
checked before queuing, `run methods`, metrics of a run in progress, logs and the worker's word."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from conftest import write_images, write_jsonl


@pytest.fixture
def task_a(cli, tmp_path):
    folder = tmp_path / "task-a"
    images = write_images(folder / "img", 6)
    records = [{"id": f"a{i}", "image": im, "conversations": [
        {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "blue"}]}
        for i, im in enumerate(images)]
    res = cli("add-task", write_jsonl(folder / "train.jsonl", records), "--name", "a", "--test-fraction", "0.34")
    assert res.exit_code == 0, res.output
    return "a"


def fake_base(folder: Path, shape: tuple[int, ...]) -> Path:
    """A model folder whose one safetensors file declares a tensor of `shape` (header only)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    n = 1
    for d in shape:
        n *= d
    header = json.dumps({"w": {"dtype": "F32", "shape": list(shape), "data_offsets": [0, 4 * n]}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    return folder


def runs_recorded(cli) -> int:
    return len(json.loads(cli("runs", "--json").stdout or "[]"))


@pytest.mark.parametrize("args", [
    ["--bogus"],
    ["nosuchcommand"],
    ["run", "start"],
    ["jobs", "cancel", "abc"],
    ["run", "start", "--method", "hide", "--tasks", "a", "--base", "x", "--routing", "banana"],
    ["metrics", "--matrix", "/no/such/file.csv"],
    ["run", "methods", "nope"],
])
def test_usage_errors_exit_3(cli, args):
    res = cli(*args)
    assert res.exit_code == 3, (args, res.output)


def test_defaults_follow_the_base_size_and_are_printed(cli, tmp_path, task_a):
    tiny = fake_base(tmp_path / "tiny", (100, 100))
    big = fake_base(tmp_path / "big", (20_000, 10_000))
    res = cli("run", "start", "--method", "seq-lora", "--tasks", "a", "--base", tiny, "--no-worker")
    assert res.exit_code == 0, res.output
    assert "lr 0.003" in res.stderr and "8 epoch(s)" in res.stderr and "tiny base (0.0M parameters)" in res.stderr
    cfg = json.loads(cli("run", "start", "--method", "seq-lora", "--tasks", "a", "--base", big, "--no-worker",
                         "--json").stdout)["config"]
    assert cfg["train"]["lr"] == 2e-4 and cfg["train"]["epochs"] == 1 and "200.0M parameters" in cfg["defaults"]
    given = json.loads(cli("run", "start", "--method", "seq-lora", "--tasks", "a", "--base", tiny, "--lr", "0.05",
                           "--no-worker", "--json").stdout)["config"]
    assert given["train"]["lr"] == 0.05 and given["train"]["epochs"] == 8  # a flag wins over the default
    shown = cli("run", "show", "1").stdout
    assert "lr 0.003" in shown and "unset values from: defaults for a tiny base" in shown
    assert "under 100M parameters lr 3e-3" in cli("run", "start", "--help").stdout


def test_settings_lines_of_a_partial_config():
    from hicl_app.cli.runs import config_lines

    lines = config_lines({"train": {"rank": 4, "lr": 0.003}})  # a run recorded before a field existed
    assert lines[0].startswith("train: — epoch(s) a stage, lr 0.003, batch — x — accum") and "rank 4" in lines[0]
    assert config_lines({})[0] == "train: —"


def test_preset_demo_is_what_the_demo_trains_with(cli, tmp_path, task_a):
    from types import SimpleNamespace

    from hicl_app.builtin import demo
    from hicl_app.services import launch

    seen = {}

    def fake_start_run(catalog, **kwargs):
        seen.update(kwargs)
        return SimpleNamespace(id=1)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(launch, "start_run", fake_start_run)
        demo._start_method(None, demo.DemoConfig(), "seq-lora", ["a"], None, tmp_path, lambda _msg: None)
    base = fake_base(tmp_path / "big", (20_000, 10_000))  # the preset wins over the size's defaults
    res = cli("run", "start", "--method", "seq-lora", "--tasks", "a", "--base", base, "--preset", "demo",
              "--no-worker", "--json")
    assert res.exit_code == 0, res.output
    cfg = json.loads(res.stdout)["config"]
    assert cfg["train"] == seen["config"]["train"] and cfg["eval"] == seen["config"]["eval"]
    assert cfg["defaults"] == "preset demo"


def test_hub_base_offline_fails_at_once(cli, task_a, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = cli("run", "start", "--method", "seq-lora", "--tasks", "a", "--base", "nobody/no-such-model", "--no-worker")
    assert res.exit_code == 3 and "not in the local Hugging Face cache" in res.stderr
    assert runs_recorded(cli) == 0


def test_hub_base_unreachable_fails_at_once(cli, task_a, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    res = cli("run", "start", "--method", "seq-lora", "--tasks", "a", "--base", "nobody/no-such-model", "--no-worker")
    assert res.exit_code == 3 and "cannot be reached" in res.stderr, res.output
    assert runs_recorded(cli) == 0


def test_hub_base_found_in_the_cache(cli, tmp_path, task_a, monkeypatch):
    cache = tmp_path / "hf-cache"
    repo = cache / "models--org--tiny"
    fake_base(repo / "snapshots" / "abc123", (10, 10))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = cli("run", "start", "--method", "seq-lora", "--tasks", "a", "--base", "org/tiny", "--no-worker", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["config"]["train"]["lr"] == 3e-3  # its size was read from the cached weights
    assert json.loads(cli("run", "show", "1", "--json").stdout)["base_model"] == "org/tiny"


def test_metrics_of_a_run_in_progress(cli, home, tmp_path, task_a):
    from tui_support import open_catalog

    from hicl_app.catalog.runs import upsert_score

    res = cli("add-task", tmp_path / "task-a" / "train.jsonl", "--name", "b", "--test-fraction", "0.34")
    assert res.exit_code == 0, res.output
    base = fake_base(tmp_path / "tiny", (10, 10))
    assert cli("run", "start", "--method", "seq-lora", "--tasks", "a,b", "--base", base, "--no-worker").exit_code == 0
    catalog = open_catalog(home)
    with catalog.session() as s:  # stage 1 trained and scored on a; stage 2 not yet
        upsert_score(s, 1, 0, "a", score=60.0, n=2, scorer="exact", predictions_path=None, details={})
        s.commit()
    catalog.dispose()
    out = json.loads(cli("metrics", "1", "--json").stdout)
    # one row of a two-stage run is not a joint matrix: MFT is its diagonal, Last its row
    assert out["mft"] == 60.0 and out["last"] == 60.0 and out["bwt"] is None
    assert out["in_progress"] is True and out["rows_complete"] == 1 and out["stages"] == 2
    text = cli("metrics", "1").stdout
    assert "row 1 of 2 complete" in text and "after stage 1 (a), not its end" in text
    assert "MFT 60.00" in text
    help_text = cli("metrics", "--help").stdout
    for key in ("mft", "tasks", "zero_shot", "general", "rows_complete", "in_progress"):
        assert key in help_text


def test_a_second_worker_says_how_many_are_alive(cli, home):
    from hicl_app.core.settings import Settings
    from hicl_app.worker.daemon import Liveness, live_workers

    settings = Settings.resolve(home)
    assert cli("worker", "--once").stderr.count("other worker") == 0  # alone: no word
    with Liveness(settings), Liveness(settings):  # two live workers (the locks a worker holds)
        assert live_workers(settings) == 2
        res = cli("worker", "--once")
        assert res.exit_code == 0 and "2 other workers are alive on this workspace: workers share the queue" in res.stderr
    assert live_workers(settings) == 0 and not list((home / "workers").glob("*.lock"))


def _keys(data) -> set[str]:
    """Every key of a --json output: the top level, and the dicts in its lists and dicts one level down."""
    rows = data if isinstance(data, list) else [data]
    keys: set[str] = set()
    for row in rows:
        if not isinstance(row, dict):
            continue
        keys |= set(row)
        for name, value in row.items():
            if name in ("config", "env", "files", "progress", "details", "metrics", "general"):
                continue  # documented as a whole (their own keys are the run's settings, file names...)
            if isinstance(value, list) and value and isinstance(value[0], dict):
                keys |= set(value[0])
    return keys


def test_every_json_key_is_in_the_help(cli, tmp_path, task_a):
    base = fake_base(tmp_path / "tiny", (10, 10))
    assert cli("run", "start", "--method", "seq-lora", "--tasks", "a", "--base", base, "--no-worker").exit_code == 0
    for command in (["tasks"], ["task", "show", "a"], ["runs"], ["run", "show", "1"], ["run", "methods"],
                    ["run", "methods", "hide"], ["metrics", "1"], ["jobs"], ["init"]):
        out = cli(*command, "--json")
        assert out.exit_code == 0, (command, out.output)
        words = set(cli(*command[:2] if command[0] in ("task", "run") else command[:1], "--help").stdout
                    .replace(",", " ").replace("{", " ").replace("}", " ").replace("[", " ").replace("]", " ")
                    .replace(":", " ").replace("(", " ").replace(")", " ").replace(".", " ").split())
        missing = _keys(json.loads(out.stdout)) - words
        assert not missing, (command, missing)
