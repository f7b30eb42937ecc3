"""The README's "Writing a method" walk-through, run as written: its code becomes a plugin package
(a module plus an entry point in `hicl.methods`), and a 2-task run of it goes through the CLI and
the worker's child process, which finds the method through the same entry point."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from engine_fixtures import add_tasks_by_cli

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_method() -> str:
    """The first python block of the README's "Writing a method" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Writing a method", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    from hicl_app.engine import methods

    site = tmp_path / "site"
    (site / "l2_lora-0.1.dist-info").mkdir(parents=True)
    (site / "l2_lora.py").write_text(readme_method(), encoding="utf-8")
    (site / "l2_lora-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: l2-lora\nVersion: 0.1\n")
    (site / "l2_lora-0.1.dist-info" / "entry_points.txt").write_text("[hicl.methods]\nl2-lora = l2_lora\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))  # the worker's child process
    methods.load_plugins()
    yield "l2-lora"
    methods.unregister("l2-lora")
    sys.modules.pop("l2_lora", None)


def test_the_readme_method_is_small_and_registers(plugin):
    from hicl_app.engine.methods import METHODS, get_method

    assert len([line for line in readme_method().splitlines() if line.strip()]) <= 20
    assert plugin in METHODS and get_method(plugin, {"weight": "0.5"}).options.weight == 0.5


def test_the_readme_method_runs_through_the_cli(plugin, cli, tmp_path, cl_tasks, tiny_base_dir):
    add_tasks_by_cli(cli, tmp_path, cl_tasks, ("color", "bg"))
    shown = cli("run", "methods", plugin)
    assert shown.exit_code == 0 and "weight" in shown.stdout and "L2" in shown.stdout
    res = cli("run", "start", "--method", plugin, "--tasks", "color,bg", "--base", tiny_base_dir, "--max-steps", "8",
              "--lr", "1e-3", "-o", "weight=0.01", "--wait", "--json")
    assert res.exit_code == 0, res.output
    detail = json.loads(cli("run", "show", json.loads(res.stdout)["run_id"], "--json").stdout)
    assert detail["status"] == "completed" and detail["method"] == plugin
    assert all(cell is not None for cell in detail["matrix"][1])
