"""Stored paths follow the workspace, and no catalog is silently lost (issue 27, data loss).

A copied or moved workspace uses its own files; `hicl task rm` deletes nothing outside the
workspace's tasks/; old catalogs are migrated to relative paths; an in-memory catalog and a
fresh catalog beside existing workspace data are refused.
"""

from __future__ import annotations

import pytest


# --- catalogs that would lose what is recorded -----------------------------------------------------
@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_catalog_is_refused(cli, llava_file, monkeypatch, url):
    monkeypatch.setenv("HICL_DB_URL", url)
    res = cli("add-task", llava_file)
    assert res.exit_code == 3, res.output
    assert "in-memory" in res.stderr and "added task" not in res.output


@pytest.mark.parametrize("state", ["zero-byte", "missing"])
def test_a_fresh_catalog_beside_workspace_data_is_refused(cli, home, tmp_path, state):
    empty = tmp_path / "first-use"  # empty folders are no data: first use creates the catalog
    for folder in ("tasks", "adapters", "checkpoints"):
        (empty / folder).mkdir(parents=True)
    assert cli("--home", empty, "tasks").exit_code == 0 and (empty / "hicl.db").stat().st_size > 0

    for folder in ("tasks/colour", "adapters/run-1", "checkpoints/run-1"):
        (home / folder).mkdir(parents=True)
        (home / folder / "data.bin").write_bytes(b"x")
    if state == "zero-byte":
        (home / "hicl.db").write_bytes(b"")
    res = cli("tasks")
    assert res.exit_code == 5, res.output
    assert "tasks/, adapters/, checkpoints/" in res.stderr
    assert "restore hicl.db from a backup" in res.stderr and "hicl init --force" in res.stderr
    assert (home / "hicl.db").exists() == (state == "zero-byte")
    if state == "zero-byte":
        assert (home / "hicl.db").stat().st_size == 0
    assert cli("init").exit_code == 5

    res = cli("init", "--force")
    assert res.exit_code == 0, res.output
    assert cli("tasks", "--json").stdout.strip() == "[]"
    assert (home / "tasks" / "colour" / "data.bin").is_file()

