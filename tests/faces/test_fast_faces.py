"""The faces start fast: `hicl --help`, `--version` and `tasks` import no ML or TUI library."""

import json
import subprocess
import sys

import pytest

HEAVY = ["torch", "transformers", "peft", "textual"]
PROBE = """
import json, sys
from hicl_app.cli.main import cli
try:
    cli.main(args=sys.argv[1:], prog_name="hicl")
except SystemExit:
    pass
print(json.dumps([m for m in {heavy} if m in sys.modules]), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["tasks"], ["tasks", "--json"], ["task", "--help"]])
def test_no_heavy_imports(args, home):
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
                          capture_output=True, text=True, timeout=120)
    loaded = json.loads(proc.stderr.strip().splitlines()[-1])
    assert loaded == [], f"`hicl {' '.join(args)}` imported {loaded}"


def test_version_and_help_exit_zero(home):
    for args in (["--version"], ["--help"]):
        proc = subprocess.run([sys.executable, "-m", "hicl_app", *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0
        assert proc.stdout.strip()


def test_usage_error_exits_3(home):
    """A usage error is an input error: exit 3, as a bad value or a bad file (no separate 2)."""
    proc = subprocess.run([sys.executable, "-m", "hicl_app", "no-such-command"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    assert "No such command" in proc.stderr and proc.stdout == ""
