"""The program every rank of a distributed stage runs: `torchrun ... -m hicl_app.engine.distributed.rank JOB.json`.

Each rank joins the group, loads the base on its own device, and calls the same `run_stage` /
`run_eval` as one process does. Rank 0 alone talks to the launcher (`launch.py`) over the socket
named by HICL_RELAY (or in the job file, for the other nodes of a multi-node stage): it sends
the events and the outcome as JSON lines and hears "stop" there; before writing a checkpoint it
waits for the launcher's "ack", so every loss point up to that step is committed first, as in
one process. A rank dies with its parent, the torchrun agent
(PR_SET_PDEATHSIG), so no rank outlives the job that started it.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import sys
import threading
import traceback
from pathlib import Path

from ...core.process import die_with_parent, parent_is

RELAY_ENV = "HICL_RELAY"
#: seconds rank 0 waits for the launcher to commit the loss points before a checkpoint
ACK_TIMEOUT = 300.0


def _die_with_parent() -> None:
    parent = os.getppid()
    if die_with_parent() and not parent_is(parent):
        os._exit(3)


class Relay:
    """Rank 0's end of the launcher's socket: events out, "stop" and "ack" in."""

    def __init__(self, address: str):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        self.sock.settimeout(None)
        self.out = self.sock.makefile("w", encoding="utf-8")
        self.stop = threading.Event()
        self.acks: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.sock.makefile("r", encoding="utf-8"):
                kind = json.loads(line).get("type")
                if kind == "stop":
                    self.stop.set()
                elif kind == "ack":
                    self.acks.put(True)
                elif kind == "veto":
                    self.acks.put(False)
        except (OSError, ValueError):  # a reset connection or a torn line: the launcher is gone too
            pass
        finally:
            self.stop.set()  # the launcher is gone: stop at the next step
            self.acks.put(False)

    def send(self, message: dict) -> None:
        try:
            self.out.write(json.dumps(message, default=str) + "\n")
            self.out.flush()
        except OSError:  # the launcher is gone: nobody is left to tell, and the next step stops
            self.stop.set()

    def event(self, event: dict) -> None:
        """Send `event`; for "before_checkpoint", wait until the launcher has committed what it
        holds. Only its "ack" lets the checkpoint be written: a "veto" (the job's lease is gone),
        a launcher that went away or one that does not answer raises CheckpointRefused."""
        self.send({"type": "event", "event": event})
        if event.get("type") == "before_checkpoint":
            try:
                ok = self.acks.get(timeout=ACK_TIMEOUT)
            except queue.Empty:
                ok = False
            if not ok:
                from ..errors import CheckpointRefused

                self.stop.set()
                raise CheckpointRefused(f"the launcher did not confirm the checkpoint at step {event.get('step')} "
                                        "(the job's lease is gone, or the launcher is): nothing was written")

    def should_stop(self) -> bool:
        return self.stop.is_set()


def peer_failure(exc: BaseException) -> bool:
    """Whether `exc` is a collective failing because another rank went away (gloo and NCCL raise
    a plain RuntimeError naming themselves) rather than an error of this rank's own."""
    import torch.distributed as dist

    text = str(exc)
    return isinstance(exc, getattr(dist, "DistError", ())) or any(
        s in text for s in ("gloo", "NCCL", "Connection reset by peer", "Connection closed by peer"))


def _device(requested: str | None) -> str:
    import torch

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if requested in (None, "cuda") and torch.cuda.is_available():
        return f"cuda:{local}"
    return requested or "cpu"


def _run(job: dict, relay: Relay | None):
    from ..config import EvalConfig, ModelConfig, from_dict
    from ..pipeline import run_eval, run_stage
    from ..spec import TaskData, spec_from_json

    on_event = relay.event if relay else None
    should_stop = relay.should_stop if relay else None
    if job["kind"] == "stage":
        spec = spec_from_json(job["spec"])
        spec.model = ModelConfig(base=spec.model.base, device=_device(spec.model.device), dtype=spec.model.dtype)
        result = run_stage(spec, on_event=on_event, should_stop=should_stop)
        if result is None:
            return None
        return {"adapter_dir": str(result.adapter_dir), "files": result.files, "scores": result.scores,
                "train_samples": result.train_samples, "steps": result.steps, "env": result.env}
    model = from_dict(ModelConfig, job["model"])
    model = ModelConfig(base=model.base, device=_device(model.device), dtype=model.dtype)
    return run_eval(model, [TaskData(**t) for t in job["tasks"]], from_dict(EvalConfig, job["eval"]), job["out_dir"],
                    method=job.get("method"), method_options=job.get("method_options"),
                    stage_dir=job.get("stage_dir"), on_event=on_event, should_stop=should_stop)


def main(argv: list[str] | None = None) -> int:
    _die_with_parent()
    args = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    from ..errors import EngineError, Stopped
    from . import comm

    spec_device = (job.get("spec", {}).get("model") or job.get("model") or {}).get("device")
    comm.init_from_env(_device(spec_device).split(":")[0])
    address = os.environ.get(RELAY_ENV) or job.get("relay")  # the job file's, on another node
    relay = Relay(address) if comm.is_main() and address else None
    try:
        out = _run(job, relay)
        comm.barrier()  # leave together: a gloo peer that is gone may abort the last one's teardown
        if relay:
            relay.send({"type": "result", "result": out})
        return 0
    except Stopped as stop:
        if relay:
            relay.send({"type": "stopped", "step": stop.step, "checkpoint": str(stop.checkpoint or "")})
        return 0
    except EngineError as exc:
        if relay:
            relay.send({"type": "error", "message": str(exc), "hint": exc.hint})
        return 1
    except Exception as exc:
        traceback.print_exc()
        if relay:
            kind = "ranks_failed" if comm.active() and peer_failure(exc) else "crash"
            relay.send({"type": kind, "message": f"{type(exc).__name__}: {exc}"})
        return 1
    finally:
        comm.shutdown()


if __name__ == "__main__":
    sys.exit(main())
