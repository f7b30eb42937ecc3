"""Where a result came from: hicl's version, its git commit when run from a checkout, the CPU.

The commit is read from the checkout's `.git` files rather than by running git: a worker records
it with every stage, and a subprocess per stage (or a git that is not installed) is not worth it.
It follows `.git` files of worktrees (``gitdir:``), their ``commondir``, and ``packed-refs``.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

from .. import __version__

#: the folder holding the hicl_app package (a checkout's root when installed from one)
_ROOT = Path(__file__).resolve().parents[2]


def _git_dir(root: Path) -> Path | None:
    dot = root / ".git"
    if dot.is_dir():
        return dot
    if dot.is_file():  # a worktree or a submodule: "gitdir: PATH"
        text = dot.read_text(encoding="utf-8", errors="replace").strip()
        if text.startswith("gitdir:"):
            target = Path(text.removeprefix("gitdir:").strip())
            return target if target.is_absolute() else (root / target).resolve()
    return None


def _ref(git_dir: Path, ref: str) -> str | None:
    common = git_dir
    if (git_dir / "commondir").is_file():
        common = (git_dir / (git_dir / "commondir").read_text(encoding="utf-8").strip()).resolve()
    for where in (git_dir, common):
        loose = where / ref
        if loose.is_file():
            return loose.read_text(encoding="utf-8").strip() or None
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] == ref and not line.startswith(("#", "^")):
                return parts[0]
    return None


def git_commit(root: Path | None = None) -> str | None:
    """The commit checked out where hicl_app lives (None when not a git checkout, e.g. a wheel)."""
    try:
        git_dir = _git_dir(root or _ROOT)
        if git_dir is None or not (git_dir / "HEAD").is_file():
            return None
        head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
        commit = _ref(git_dir, head.removeprefix("ref:").strip()) if head.startswith("ref:") else head
    except OSError:
        return None
    return commit if commit and len(commit) >= 7 and all(c in "0123456789abcdef" for c in commit) else None


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else what `platform` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def provenance() -> dict[str, str | None]:
    """{"hicl": version, "hicl_commit": commit or None, "cpu": model}, for a run's environment."""
    return {"hicl": __version__, "hicl_commit": git_commit(), "cpu": cpu_model()}
