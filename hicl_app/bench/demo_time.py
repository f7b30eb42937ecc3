"""The wall time of `hicl demo` from a fresh workspace, as a new user meets it, and where it went.

Runs `hicl demo --json [ARGS]` in a new temporary workspace in a child process (imports, the
benchmark, the tiny base's build and every run included), then prints the total, the base
build's share, each run's own wall time, and the machine it ran on (CPU model, cores, library
versions), so a figure can be quoted with its machine. Run it on an idle machine:
`python -m hicl_app.bench.demo_time [-- DEMO ARGS]`, e.g. `python -m hicl_app.bench.demo_time -- --quick`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..core.provenance import cpu_model, git_commit


def machine() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def v(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(), "torch": v("torch"),
            "transformers": v("transformers"), "peft": v("peft"), "hicl_commit": git_commit(),
            "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def measure(demo_args: list[str], keep: Path | None = None) -> dict:
    """Run the demo in a fresh workspace; its wall time, the base build's, each run's, the machine."""
    home = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="hicl-demo-time-"))
    if keep and home.exists() and any(home.iterdir()):
        raise SystemExit(f"{home} is not empty: the figure is for a fresh workspace")
    before = machine()
    cmd = [sys.executable, "-m", "hicl_app.cli.main", "demo", "--home", str(home), "--json", *demo_args]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HICL_HOME": str(home)})
        wall = time.monotonic() - t0
    finally:
        if keep is None:
            shutil.rmtree(home, ignore_errors=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"hicl demo failed (exit {proc.returncode})")
    out = json.loads(proc.stdout)
    base = re.search(r"built the tiny base \S+ in (\d+)s", proc.stderr)
    return {"wall_s": wall, "demo_wall_s": out["wall_s"], "base_build_s": float(base.group(1)) if base else None,
            "runs": {label: r.get("wall_s") for label, r in out["runs"].items()}, "args": demo_args,
            "machine": before, "load_avg_1m_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="Run in this (new or empty) folder and keep it.")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    parser.add_argument("demo_args", nargs="*", help="Arguments for `hicl demo` (after --).")
    args = parser.parse_args(argv)
    result = measure(args.demo_args, args.keep)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    m = result["machine"]
    print(f"hicl demo {' '.join(result['args']) or '(defaults)'}: {result['wall_s']:.0f} s from a fresh workspace "
          f"(the demo's own clock: {result['demo_wall_s']:.0f} s)")
    if result["base_build_s"] is not None:
        print(f"  tiny base build: {result['base_build_s']:.0f} s")
    for label, seconds in result["runs"].items():
        print(f"  run {label}: {seconds:.0f} s" if seconds is not None else f"  run {label}: —")
    print(f"machine: {m['cpu']}, {m['cores']} cores; python {m['python']}, torch {m['torch']}, transformers "
          f"{m['transformers']}, peft {m['peft']}; hicl {(m['hicl_commit'] or '')[:12]}; load average "
          f"{m['load_avg_1m']:.2f} before, {result['load_avg_1m_after']:.2f} after (above 0.5: not idle)")


if __name__ == "__main__":
    main()
