"""`hicl pull`: bring a run published by hicl (`hicl push`, `run start --push-to`) into the catalog.

The repo's `hicl.json` says everything: the method and its configuration, the task order and
each task's metadata and hashes, every stage's files with their sha256, and the accuracy matrix.
The snapshot is downloaded with huggingface_hub (its cache under the workspace's `cache/hub`),
every file is checked against the manifest, and then the run, its stages, their adapters (copied
to `adapters/run-<id>/stage-<i>/`, the layout the worker writes, so `run extend` and `run eval`
use them as they would a local run's) and its scores are recorded in one transaction.

Tasks are not created: a task's data is not in the repo. The manifest's metadata is kept with
the run, and a local task of the same name is compared by its sha256, so a user knows whether
`run eval` / `run extend` would score on the same data.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sqlmodel import select

from ..catalog.db import Catalog
from ..catalog.models import Adapter, Run, Stage, Task, utcnow
from ..catalog.runs import add_event, upsert_score
from ..core.errors import HiclError, InvalidInput, NotFound
from ..core.fsio import publish_dir, sha256_file, staging_dir
from .bundle import MANIFEST_FORMAT, MANIFEST_NAME
from .push import HubUnreachable, _Context, check_repo_id, resolve_endpoint


class PulledFileChanged(HiclError):
    """A downloaded file does not have the sha256 the repo's manifest lists for it."""


@dataclass
class PullResult:
    run_id: int
    name: str
    repo_id: str
    endpoint: str
    revision: str
    commit: str
    stages: int
    tasks: dict[str, str] = field(default_factory=dict)  # name -> present | absent | differs

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def pull_run(catalog: Catalog, repo_id: str, *, revision: str | None = None, endpoint: str | None = None,
             base: str | None = None, name: str | None = None, methods: list[str] | None = None) -> PullResult:
    """Download `repo_id` at `revision` (a tag such as stage-1, a branch, a commit; default main)
    and record it as a completed run of this workspace. `methods`: the method names this hicl
    has (the engine's registry, which this layer does not import); a run of another is refused."""
    check_repo_id(repo_id)
    endpoint = resolve_endpoint(endpoint)
    snapshot, commit = _download(catalog, repo_id, revision or "main", endpoint)
    manifest = _manifest(snapshot, repo_id)
    _verify(snapshot, manifest)
    run_info = manifest["run"]
    base_model = _base(run_info, base)
    if methods is not None and run_info["method"] not in methods:
        raise InvalidInput(f"the run's method {run_info['method']!r} is not one this hicl knows",
                           hint=f"this hicl has {', '.join(methods)}; upgrade hicl")
    stages = manifest["stages"]
    trained: list[str] = []
    for st in stages:
        trained += [t for t in st["train_tasks"] if t not in trained]
    order = [t for t in manifest["task_order"] if t in trained] + [t for t in trained if t not in manifest["task_order"]]
    tasks_meta = {t["name"]: t for t in manifest.get("tasks", [])}
    config = {k: v for k, v in (run_info.get("config") or {}).items() if k != "publish"}
    config["pulled"] = {"repo_id": repo_id, "endpoint": endpoint, "revision": revision or "main", "commit": commit,
                        "stage": manifest["stage"], "tasks": [tasks_meta.get(t, {"name": t}) for t in order]}

    with catalog.session() as s:
        local = {t.name: t for t in s.exec(select(Task).where(Task.name.in_(order)))}
        presence = {t: _presence(local.get(t), tasks_meta.get(t, {})) for t in order}
        run = Run(name=name or run_info["name"], method=run_info["method"], base_model=base_model, task_order=order,
                  config=config, env=run_info.get("env") or {}, status="completed", started_at=utcnow(),
                  finished_at=utcnow())
        s.add(run)
        s.flush()
        final = catalog.settings.adapters / f"run-{run.id}"
        staged = staging_dir(final)
        try:
            for st in stages:
                stage = Stage(run_id=run.id, index=st["index"], train_tasks=list(st["train_tasks"]), status="done",
                              finished_at=utcnow())
                s.add(stage)
                s.flush()
                folder = staged / f"stage-{st['index']}"
                for rel in st["files"]:
                    _safe(rel)
                    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(snapshot / st["path"] / rel, folder / rel)
                dest = final / f"stage-{st['index']}"
                adapter_rel = st.get("adapter") or "adapter"
                s.add(Adapter(run_id=run.id, stage_id=stage.id, kind="peft", path=str(dest / adapter_rel),
                              sha256=st["files"].get(f"{adapter_rel}/adapter_model.safetensors", ""),
                              size_bytes=sum((folder / rel).stat().st_size for rel in st["files"]),
                              files=dict(st["files"])))
            col = {t: j for j, t in enumerate(manifest["task_order"])}
            rows = [(i, row) for i, row in enumerate(manifest.get("matrix") or [])]
            if manifest.get("zero_shot"):
                rows.append((-1, manifest["zero_shot"]))
            for i, row in rows:
                for t in order:
                    j = col.get(t)
                    value = row[j] if j is not None and j < len(row) else None
                    if value is not None:
                        meta = tasks_meta.get(t, {})
                        upsert_score(s, run.id, i, t, score=float(value), n=int(meta.get("n_test") or 0),
                                     scorer=meta.get("scorer", ""), details={"pulled_from": repo_id})
            add_event(s, f"run {run.id} pulled from {repo_id}@{revision or 'main'} ({commit[:12]}) on {endpoint}: "
                         f"{len(stages)} stage(s)", run_id=run.id, data={"tasks": presence})
            s.flush()
            publish_dir(staged, final)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return PullResult(run_id=run.id, name=run.name, repo_id=repo_id, endpoint=endpoint,
                          revision=revision or "main", commit=commit, stages=len(stages), tasks=presence)


def _download(catalog: Catalog, repo_id: str, revision: str, endpoint: str) -> tuple[Path, str]:
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.utils import get_token

    from .. import __version__

    if constants.HF_HUB_OFFLINE:
        raise HubUnreachable("the Hugging Face Hub is switched off in this environment (HF_HUB_OFFLINE or "
                             "TRANSFORMERS_OFFLINE is set)", hint="unset HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE to pull")
    token = get_token()
    ctx = _Context(token=token or "", endpoint=endpoint, repo_id=repo_id)
    api = HfApi(endpoint=endpoint, token=token, library_name="hicl", library_version=__version__)
    try:
        info = api.repo_info(repo_id, revision=revision)
        path = snapshot_download(repo_id, revision=info.sha, endpoint=endpoint, token=token,
                                 cache_dir=catalog.settings.cache / "hub", library_name="hicl",
                                 library_version=__version__)
    except RevisionNotFoundError:
        raise NotFound(f"{repo_id} on {endpoint} has no revision {revision!r}",
                       hint="tags are stage-K (e.g. --revision stage-1); omit --revision for main") from None
    except RepositoryNotFoundError:
        raise NotFound(f"no repo {repo_id} on {endpoint} (or it is private and the token cannot see it)",
                       hint="check the repo id and --endpoint; for a private repo set HF_TOKEN") from None
    except HiclError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of a hub call becomes a HubError
        raise ctx.translate(exc, "download the repo") from None
    return Path(path), info.sha


def _manifest(snapshot: Path, repo_id: str) -> dict:
    path = snapshot / MANIFEST_NAME
    if not path.is_file():
        raise InvalidInput(f"{repo_id} has no {MANIFEST_NAME}: it was not published by hicl",
                           hint="pull a repo made by `hicl push` or `run start --push-to`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{repo_id}: {MANIFEST_NAME} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise InvalidInput(f"{repo_id}: {MANIFEST_NAME} has format {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                           f"not {MANIFEST_FORMAT!r}", hint="this hicl reads only manifests it writes")
    return manifest


def _verify(snapshot: Path, manifest: dict) -> None:
    """Every file the manifest lists is there with its sha256 (a snapshot is checked by the hub's
    etags for LFS files; the small ones and the manifest's own word are checked here)."""
    for rel, entry in sorted((manifest.get("files") or {}).items()):
        _safe(rel)
        path = snapshot / rel
        if not path.is_file():
            raise PulledFileChanged(f"{rel} is listed in {MANIFEST_NAME} but is not in the repo")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise PulledFileChanged(f"{rel}: sha256 {actual[:16]}… downloaded, {entry['sha256'][:16]}… in {MANIFEST_NAME}",
                                    hint="the repo was changed by hand after hicl pushed it; pull a stage-K tag")
    for st in manifest.get("stages", []):
        for rel, sha in st["files"].items():
            listed = manifest["files"].get(f"{st['path']}/{rel}")
            if listed is None or listed["sha256"] != sha:
                raise PulledFileChanged(f"stage {st['index']}: {rel} does not match the manifest's file list")


def _safe(rel: str) -> None:
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise PulledFileChanged(f"the manifest lists an unsafe path {rel!r}")


def _base(run_info: dict, base: str | None) -> str:
    if base:
        path = Path(base).expanduser()
        if path.exists():
            if not (path / "config.json").is_file():
                raise InvalidInput(f"--base {path} has no config.json", hint="pass a folder saved with save_pretrained")
            return str(path.resolve())
        return base
    if run_info.get("base_model_is_local"):
        raise InvalidInput(f"the run was trained on a local base model ({run_info['base_model']!r}), which is not "
                           "in the repo", hint="pass --base PATH to your copy of that model")
    return run_info["base_model"]


def _presence(task: Task | None, meta: dict) -> str:
    if task is None:
        return "absent"
    same = task.source_sha256 == meta.get("source_sha256") and \
        (meta.get("test_source_sha256") is None or task.test_source_sha256 == meta.get("test_source_sha256"))
    return "present" if same else "differs"
