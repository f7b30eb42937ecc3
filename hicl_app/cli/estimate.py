"""`hicl estimate`: parameters, method state and memory per device of a run, before it is started."""

from __future__ import annotations

from pathlib import Path

import click

from ..core.errors import InvalidInput
from ..engine.config import TrainConfig
from .output import emit_json, table

DTYPES = ("bfloat16", "float16", "float32")


@click.command("estimate")
@click.option("--base", required=True,
              help="A folder holding config.json (no weights needed), a hub id, or a built-in base (tiny, small, ...).")
@click.option("--method", required=True, help="The method (`hicl run methods` lists them).")
@click.option("--nproc", type=int, default=1, show_default=True, help="Ranks (GPUs) the run trains on.")
@click.option("--batch-size", type=int, default=TrainConfig.batch_size, show_default=True,
              help="Global batch, split evenly between the ranks.")
@click.option("--tasks", type=int, default=6, show_default=True, help="Tasks in the sequence (for the method's state).")
@click.option("--rank", type=int, default=TrainConfig.rank, show_default=True, help="LoRA rank.")
@click.option("--max-length", type=int, default=TrainConfig.max_length, show_default=True,
              help="Text tokens per sample (an image's tokens come on top).")
@click.option("--dtype", type=click.Choice(DTYPES), default="bfloat16", show_default=True, help="Weights and activations.")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None,
              help="Which peak the estimate is (default: on for models above 1B parameters, as a run does).")
@click.option("-o", "--option", "options", multiple=True, help="Method option KEY=VALUE (repeatable), e.g. -o expand=auto.")
@click.option("--json", "as_json", is_flag=True,
              help="Keys: base, model, method, tasks, rank, method_options, parameters, parts, trainable, state "
                   "(what the method keeps: parameters, parts, bytes, notes), memory (bytes per device: peak, "
                   "peak_checkpointing, peak_no_checkpointing, activations, and the inputs nproc, batch_size, "
                   "per_rank_batch, max_length, image_tokens, sequence, dtype, gradient_checkpointing).")
def estimate(base, method, nproc, batch_size, tasks, rank, max_length, dtype, gradient_checkpointing,
             options, as_json) -> None:
    """Size a run from its base's config alone (built on the meta device: nothing loaded, seconds on a CPU).

    Prints the parameters, the LoRA's trainable ones, what the method keeps after --tasks tasks and
    the peak memory per device of a training step, with and without gradient checkpointing.
    """
    from ..engine.errors import EngineError
    from ..services.method_options import parse_pairs

    method_options = parse_pairs(options, example="-o expand=auto")
    try:
        from ..engine.modeling import estimate as est

        config = _config(base, est)
        result = est.estimate(config, method, method_options=method_options, tasks=tasks, rank=rank, nproc=nproc,
                              batch_size=batch_size, max_length=max_length, dtype=dtype,
                              gradient_checkpointing=gradient_checkpointing)
    except EngineError as exc:
        raise InvalidInput(str(exc), hint=exc.hint) from None
    result = {"base": base, **result}
    if as_json:
        emit_json(result)
    else:
        click.echo(render(result))


def _config(base: str, est):
    """A built-in base's config (unless a folder of that name exists), else the folder's or hub id's."""
    from ..builtin.tiny import SIZES
    from ..engine.errors import EngineError

    if base in SIZES and not Path(base).exists():
        from ..builtin.tiny_config import tiny_config

        return tiny_config(base)
    try:
        return est.load_config(base)
    except EngineError as exc:
        hint = f"{exc.hint}, or a built-in base: {', '.join(SIZES)}" if exc.hint else None
        raise InvalidInput(str(exc), hint=hint) from None


def _n(value: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return str(value)


def _gib(value: int) -> str:
    return f"{value / 2**30:.2f} GiB"


def _size(value: int) -> str:
    return _gib(value) if value >= 2**30 else f"{value / 2**20:.1f} MiB"


def render(r: dict) -> str:
    """The estimate as two short tables and the assumptions under them."""
    p, m, st = r["parts"], r["memory"], r["state"]
    params = [["total", _n(r["parameters"])],
              ["  language model", _n(p["language_model"])],
              ["  vision tower", _n(p["vision_tower"])],
              ["  projector", _n(p["projector"])],
              ["  lm_head and other", _n(p["lm_head_and_other"])],
              [f"trainable (LoRA r={r['rank']})", _n(r["trainable"])],
              [f"state after {r['tasks']} tasks", f"{_n(st['parameters'])} ({_size(st['bytes'])} float32)"]]
    params += [[f"  {k}", _n(v)] for k, v in st["parts"].items() if len(st["parts"]) > 1]
    if "answering_extra" in st:
        params.append(["  answering model adds", _n(st["answering_extra"])])
    on = m["gradient_checkpointing"]
    fixed = [("weights", m["weights"]), ("trainable + grads + AdamW", m["trainable_state"]), ("logits", m["logits"])]
    mem = [[k, _gib(v), _gib(v)] for k, v in fixed]
    mem.append(["activations", _gib(m["activations"]["checkpointing"]), _gib(m["activations"]["no_checkpointing"])])
    mem.append(["peak", _gib(m["peak_checkpointing"]) + (" *" if on else ""),
                _gib(m["peak_no_checkpointing"]) + ("" if on else " *")])
    why = f"auto: on above {_n(m['gradient_checkpointing_above'])} parameters" if m["gradient_checkpointing_auto"] else "as asked"
    lines = [f"{r['base']} ({r['model']}), {r['method']}", table(["", "parameters"], params, align_right={1}), "",
             f"memory per device: DDP on {m['nproc']}, batch {m['per_rank_batch']} per rank, "
             f"{m['max_length']} + {m['image_tokens']} image tokens, {m['dtype']}",
             table(["", "checkpointing", "no checkpointing"], mem, align_right={1, 2}),
             f"* the run's peak (gradient checkpointing {'on' if on else 'off'}, {why}); CUDA context and "
             "allocator slack not included"]
    lines += [f"note: {n}" for n in st["notes"]]
    return "\n".join(lines)


COMMANDS = [estimate]
