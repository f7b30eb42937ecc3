"""Processes that must not outlive their parent: a job, torchrun under it, and each rank.

Linux's PR_SET_PDEATHSIG has the kernel kill this process when its parent dies, so a `kill -9`
anywhere up the chain (worker, job process, torchrun agent) never leaves training running
unsupervised. Elsewhere it does nothing and the callers' own checks (the parent pid) apply.
"""

from __future__ import annotations

import os
import signal
import sys


def die_with_parent() -> bool:
    """Ask for SIGKILL when the parent dies; True when the kernel took the request."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def parent_is(pid: int) -> bool:
    """False once the parent is gone (the process was re-parented), e.g. before `die_with_parent` took effect."""
    return os.getppid() == pid
