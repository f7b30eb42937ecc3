"""Worker identities that tell, on the same machine, whether their process is still alive.

An owner id is `host:pid:ns-start-rand`: the host name, the worker's pid, its PID namespace
and its process start time (Linux), and a random tag. A worker that finds a lease held by an
owner of the same host and PID namespace whose process is gone (or whose pid now belongs to a
process started at another time) re-queues the job at once instead of waiting for the lease to
expire. Owners from other machines, other namespaces, or where /proc is missing are never
judged: their leases simply expire.
"""

from __future__ import annotations

import os
import socket
import uuid

_HOST = socket.gethostname().replace(":", "_")


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


def _start_time(pid: int) -> str | None:
    """The start time (clock ticks since boot, field 22 of /proc/PID/stat) of a live process;
    None when there is none (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def worker_id() -> str:
    pid = os.getpid()
    return f"{_HOST}:{pid}:{_pid_namespace()}-{_start_time(pid) or 0}-{uuid.uuid4().hex[:6]}"


def owner_is_dead(owner: str) -> bool:
    """True only when `owner` is surely a dead worker of this machine and PID namespace."""
    parts = owner.split(":")
    if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit():
        return False
    tag = parts[2].split("-")
    if len(tag) != 3 or tag[0] == "0" or tag[0] != _pid_namespace() or tag[1] == "0":
        return False
    return _start_time(int(parts[1])) != tag[1]
