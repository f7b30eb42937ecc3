"""What `hicl push` uploads: the files of a run's stages as the catalog records them, checked
against their sha256, plus a `hicl.json` manifest and a model card.

Layout of the repo (one commit):

    README.md                      model card (library_name: peft, base_model, tags, matrix)
    hicl.json                      manifest: method, config, task order and hashes, every file's sha256
    adapter_config.json            the chosen stage's adapter, PEFT layout, so that
    adapter_model.safetensors      PeftModel.from_pretrained(base, REPO_ID) works (the whole model
                                   for a LoRA method; the card says what loads hide or llava-c)
    stages/stage-<k>/...           every stage up to the chosen one: its adapter and method state,
                                   exactly the files its catalog row lists

Stages are numbered from 1 here (folders, tags, the card) as everywhere a user reads them; the
manifest's `index` and `stage` fields are 0-based positions, like the CLI's --json.

Nothing here touches the network: the plan is what `--dry-run` shows and what the push commits.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from sqlmodel import Session, select

from .. import __version__
from ..catalog.models import Adapter, Run, Task
from ..catalog.runs import accuracy_matrix, adapters_of, get_run, stages_of
from ..core import clmetrics
from ..core.errors import Conflict, InvalidInput, NotFound
from ..core.fsio import sha256_file

MANIFEST_NAME = "hicl.json"
CARD_NAME = "README.md"
MANIFEST_FORMAT = "hicl-push/1"
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
INLINE_MAX_BYTES = 1 << 20


class ArtifactChanged(Conflict):
    """A file the catalog points to is gone or no longer has the sha256 recorded for it."""


@dataclass(frozen=True)
class Upload:
    """One file of the commit: its bytes (`data`) when small or generated, else read from `source`."""

    path_in_repo: str
    size: int
    sha256: str
    source: Path | None = None
    data: bytes | None = None

    def as_dict(self) -> dict:
        return {"path": self.path_in_repo, "size": self.size, "sha256": self.sha256,
                "source": str(self.source) if self.source else None}


@dataclass(frozen=True)
class Bundle:
    run_id: int
    run_name: str
    stage_index: int
    n_stages: int
    run_status: str
    uploads: tuple[Upload, ...]
    manifest: dict

    @property
    def number(self) -> int:
        """The stage as users count it, from 1."""
        return self.stage_index + 1

    @property
    def total_bytes(self) -> int:
        return sum(u.size for u in self.uploads)

    def tag(self, revision: str) -> str:
        """The tag this stage gets: `stage-<k>` on main, `<branch>-stage-<k>` on another branch."""
        return f"stage-{self.number}" if revision == "main" else f"{revision}-stage-{self.number}"


def is_hub_id(base_model: str) -> bool:
    """A hub id (`org/name` or `name`), as opposed to a local folder the run was trained from."""
    return not Path(base_model).expanduser().exists() and not base_model.startswith((".", "/", "~")) \
        and base_model.count("/") <= 1


def build_bundle(session: Session, run_ref: str | int, *, repo_id: str, stage: int | None = None) -> Bundle:
    """Plan the upload of `stage` (a 0-based index; default: the last trained one) of a run,
    verifying every file."""
    run = get_run(session, run_ref)
    stages = stages_of(session, run.id)
    by_stage_id = {st.id: st for st in stages}
    adapters: dict[int, Adapter] = {}
    for a in adapters_of(session, run.id):  # newest row of a stage wins (a stage trained again)
        if a.stage_id in by_stage_id:
            adapters[by_stage_id[a.stage_id].index] = a
    if stage is None:
        if not adapters:
            raise NotFound(f"run {run.id} ({run.name}) has no trained stage yet",
                           hint=f"`hicl run show {run.id}` shows its progress")
        stage = max(adapters)
    elif not 0 <= stage < len(stages):
        raise InvalidInput(f"run {run.id} has stages 1..{len(stages)}; there is no stage {stage + 1}")
    missing = [i for i in range(stage + 1) if i not in adapters]
    if missing:
        raise NotFound(f"run {run.id}: stage(s) {', '.join(str(i + 1) for i in missing)} have no adapter yet "
                       f"(status: {', '.join(stages[i].status for i in missing)})",
                       hint="push a stage that finished, or wait for the run")

    uploads: list[Upload] = []
    stage_entries = []
    verified = {i: _verified_files(adapters[i]) for i in range(stage + 1)}
    for i in range(stage + 1):
        files = verified[i]
        prefix = f"stages/stage-{i + 1}"
        uploads += [replace(up, path_in_repo=f"{prefix}/{rel}") for rel, up in sorted(files.items())]
        stage_entries.append({"index": i, "train_tasks": list(stages[i].train_tasks), "path": prefix,
                              "adapter": _adapter_rel(adapters[i]),
                              "files": {rel: up.sha256 for rel, up in sorted(files.items())}})
    root = _root_adapter(adapters[stage], verified[stage])
    answering = _export(verified[stage], stage)
    uploads = [replace(up, path_in_repo=name) for name, up in root] + uploads

    names, matrix, zero = accuracy_matrix(session, run)
    rows = matrix[: stage + 1]
    tasks = _task_entries(session, names)
    manifest = {
        "format": MANIFEST_FORMAT,
        "hicl_version": __version__,
        "repo_id": repo_id,
        "run": {"id": run.id, "name": run.name, "method": run.method, "status": run.status,
                "base_model": _public_base(run.base_model), "base_model_is_local": not is_hub_id(run.base_model),
                "config": run.config, "env": run.env},
        "stage": stage,
        "n_stages": len(stages),
        "task_order": names,
        "tasks": tasks,
        "stages": stage_entries,
        "root_adapter": {"stage": stage, "files": {name: up.sha256 for name, up in root}},
        "answering_model": answering,
        "matrix": rows,
        "zero_shot": zero,
        "metrics": clmetrics.compute(rows, zero, joint=len(stages) == 1),
        "files": {u.path_in_repo: {"sha256": u.sha256, "size": u.size} for u in uploads},
    }
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    card_bytes = model_card(run, manifest, repo_id).encode()
    uploads = [_generated(CARD_NAME, card_bytes), _generated(MANIFEST_NAME, manifest_bytes)] + uploads
    return Bundle(run_id=run.id, run_name=run.name, stage_index=stage, n_stages=len(stages), run_status=run.status,
                  uploads=tuple(uploads), manifest=manifest)


def _export(files: dict[str, Upload], stage: int) -> dict:
    """What answers after the stage, as its method said in its stage.json (`Method.export`): the
    files under `stages/stage-<k>/` (k counted from 1), and whether plain PEFT loads that model."""
    manifest = files.get("stage.json")
    data = manifest.data if manifest is not None and manifest.data is not None else (
        manifest.source.read_bytes() if manifest is not None else b"{}")
    export = json.loads(data or b"{}").get("export")
    if not export:  # a stage trained before methods declared their export: the adapter is all we know
        return {"files": [], "peft": True, "loader": "PeftModel.from_pretrained(base, REPO_ID)"}
    return {"files": [f"stages/stage-{stage + 1}/{f}" for f in export["files"]], "peft": bool(export["peft"]),
            "loader": export["loader"]}


def _generated(name: str, data: bytes) -> Upload:
    return Upload(name, len(data), hashlib.sha256(data).hexdigest(), data=data)


def _stage_dir(adapter: Adapter) -> Path:
    return Path(adapter.path).parent


def _adapter_rel(adapter: Adapter) -> str:
    return Path(adapter.path).relative_to(_stage_dir(adapter)).as_posix()


def _verified_files(adapter: Adapter) -> dict[str, Upload]:
    """{relative path: upload} of a stage, each file checked against the catalog.

    Small files are kept in memory, so what is committed is the very bytes that were checked;
    large ones are read again by the upload, which the Hub checks against the sha256 given here.
    """
    root = _stage_dir(adapter)
    out = {}
    for rel, expected in sorted((adapter.files or {}).items()):
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts:
            raise ArtifactChanged(f"the catalog lists an unsafe path {rel!r} for {root}")
        path = root / pure
        if not path.is_file():
            raise ArtifactChanged(f"{path} is missing (the catalog lists it for this stage)",
                                  hint="restore the workspace's adapters/ folder, or train the stage again")
        size = path.stat().st_size
        data = path.read_bytes() if size <= INLINE_MAX_BYTES else None
        actual = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(path)
        if actual != expected:
            raise ArtifactChanged(f"{path} no longer matches the catalog: sha256 {actual[:16]}… on disk, "
                                  f"{expected[:16]}… recorded",
                                  hint="the file was changed after training; restore it or train the stage again")
        out[pure.as_posix()] = Upload(pure.as_posix(), len(data) if data is not None else size, actual,
                                      source=path, data=data)
    return out


def _root_adapter(adapter: Adapter, files: dict[str, Upload]) -> list[tuple[str, Upload]]:
    """The stage's PEFT files, named as they go at the repo root (PEFT's own README gives way
    to the model card)."""
    rel = _adapter_rel(adapter)
    prefix = "" if rel == "." else rel + "/"
    root = [(name[len(prefix):], entry) for name, entry in files.items()
            if name.startswith(prefix) and "/" not in name[len(prefix):]
            and name[len(prefix):] not in (CARD_NAME, MANIFEST_NAME)]
    have = {name for name, _ in root}
    lacking = [f for f in PEFT_FILES if f not in have]
    if lacking:
        raise ArtifactChanged(f"the adapter in {adapter.path} lacks {', '.join(lacking)} in the catalog",
                              hint="the stage did not save a PEFT adapter; train it again")
    return sorted(root)


def _task_entries(session: Session, names: list[str]) -> list[dict]:
    rows = {t.name: t for t in session.exec(select(Task).where(Task.name.in_(names)))}
    out = []
    for name in names:
        t = rows.get(name)
        out.append({"name": name} if t is None else {
            "name": name, "scorer": t.scorer, "n_train": t.n_train, "n_test": t.n_test,
            "source_sha256": t.source_sha256, "test_source_sha256": t.test_source_sha256})
    return out


def _public_base(base_model: str) -> str:
    """The base model as the card may show it: a hub id as is, a local folder by its name only."""
    return base_model if is_hub_id(base_model) else Path(base_model).name


def model_card(run: Run, manifest: dict, repo_id: str) -> str:
    """README.md: metadata the Hub indexes (ModelCardData) and the run's results in Markdown."""
    from huggingface_hub import ModelCard, ModelCardData

    stage, names = manifest["stage"], manifest["task_order"]
    data = ModelCardData(
        library_name="peft",
        base_model=run.base_model if is_hub_id(run.base_model) else None,
        pipeline_tag="image-text-to-text",
        tags=["continual-learning", "hicl", "peft", "lora", run.method],
    )
    base = manifest["run"]["base_model"]
    load_base = base if is_hub_id(run.base_model) else f"path/to/{base}"
    trained = ", ".join(t for st in manifest["stages"] for t in st["train_tasks"])
    lines = [
        f"# {run.name}",
        "",
        f"LoRA adapter for `{base}`{' (a local base model)' if not is_hub_id(run.base_model) else ''}, "
        f"trained continually with hicl using **{run.method}** over "
        f"{len(names)} task(s): {' → '.join(names)}.",
        f"This commit holds the adapter after stage {stage + 1} of {manifest['n_stages']} (trained so far on: {trained}).",
        "",
        "## Use",
        "",
        *_usage(manifest["answering_model"], load_base, repo_id, run.method),
        "",
        f"Every stage up to this one is kept under `stages/stage-<k>/`, k from 1 (its adapter and method state, "
        f"safetensors); `{MANIFEST_NAME}` lists the method, its configuration and every file's sha256.",
        "",
        "## Tasks",
        "",
        _md_table(["#", "task", "scorer", "train", "test", "sha256 of the source file"],
                  [[j, t["name"], t.get("scorer", ""), t.get("n_train", ""), t.get("n_test", ""),
                    f"`{t['source_sha256']}`" if t.get("source_sha256") else ""]
                   for j, t in enumerate(manifest["tasks"])]),
        "",
        "## Accuracy matrix",
        "",
        "Row = after training stage, column = task; scores in points (accuracy %, or for caption tasks the mean of "
        "BLEU-1..4, ROUGE-L and CIDEr-D x100, which can pass 100).",
        "",
        _md_table(["after stage"] + names,
                  ([["zero-shot"] + [_num(v) for v in manifest["zero_shot"]]] if manifest["zero_shot"] else [])
                  + [[i + 1] + [_num(v) for v in row] for i, row in enumerate(manifest["matrix"])]),
        "",
        "## Metrics",
        "",
        _md_table(["MFT", "Last", "Avg", "BWT", "Forgetting", "FWT"],
                  [[_num(manifest["metrics"].get(k)) for k in clmetrics.METRICS]]),
        "",
        "MFT = mean of the diagonal, Last = mean of the last row, Avg = mean over stages of the mean over the "
        "tasks seen so far, BWT = backward transfer, FWT = forward transfer against the zero-shot row.",
        "",
    ]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))


def _usage(answering: dict, load_base: str, repo_id: str, method: str) -> list[str]:
    """How to load the model that answers: plain PEFT where that is the whole model, else what the
    method says (its routing state or consolidated delta is not a PEFT adapter)."""
    peft = ["```python", "from peft import PeftModel", "from transformers import AutoModelForImageTextToText", "",
            f'base = AutoModelForImageTextToText.from_pretrained("{load_base}")',
            f'model = PeftModel.from_pretrained(base, "{repo_id}")', "```"]
    if answering["peft"]:
        return peft
    files = ", ".join(f"`{f}`" for f in answering["files"])
    return [f"The model that answers after this stage is **not** the PEFT adapter at the root: {method} keeps "
            f"more state ({files}). It loads with {answering['loader']}.", "",
            "The root adapter is this stage's own LoRA; it loads with plain PEFT but is not the scored model:", "",
            *peft]


def _num(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def _md_table(headers: list, rows: list[list]) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers))] + [line(r) for r in rows])
