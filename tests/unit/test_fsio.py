"""Atomic writes give files the permissions a plain write would: the user's umask, not mkstemp's 0600."""

from __future__ import annotations

import os
import stat

import pytest

from hicl_app.core.fsio import atomic_write_text, current_umask, publish_dir, staging_dir


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_and_published_folders_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        path = atomic_write_text(tmp_path / "a.txt", "x")
        staged = staging_dir(tmp_path / "folder")
        atomic_write_text(staged / "b.txt", "y")
        published = publish_dir(staged, tmp_path / "folder")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert stat.S_IMODE((published / "b.txt").stat().st_mode) == mode
    assert stat.S_IMODE(published.stat().st_mode) == 0o777 & ~umask
