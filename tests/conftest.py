"""Shared fixtures: an isolated workspace per test and a CLI runner bound to it; the session-wide
tiny model and tasks of `engine_fixtures` come in as a plugin, so tests take them by name."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = ["engine_fixtures"]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh workspace; HICL_HOME points at it and HICL_DB_URL is cleared."""
    ws = tmp_path / "ws"
    monkeypatch.setenv("HICL_HOME", str(ws))
    monkeypatch.delenv("HICL_DB_URL", raising=False)
    return ws


@pytest.fixture
def cli(home):
    """Invoke `hicl ...` in-process; returns click's Result (stdout and stderr kept apart)."""
    from click.testing import CliRunner

    from hicl_app.cli.main import cli as group

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(group, [str(a) for a in args], catch_exceptions=False)

    return invoke


def write_images(folder: Path, n: int, size: int = 16) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        Image.new("RGB", (size, size), (10 * i % 255, 80, 160)).save(folder / f"{i}.png")
        names.append(f"img/{i}.png")
    return names


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def llava_file(tmp_path) -> Path:
    """A valid 10-record LLaVA-format JSONL with its images in img/."""
    names = write_images(tmp_path / "img", 10)
    recs = [{"id": f"s{i}", "image": n, "conversations": [
        {"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "blue"}]}
        for i, n in enumerate(names)]
    return write_jsonl(tmp_path / "colour.jsonl", recs)
