"""Live publishing: each stage of a `run start --push-to` run is pushed as soon as it is scored.

The worker queues a `push` job when a stage is recorded (`worker/stage.py`); that job calls
`publish_stage`, which pushes the stage with `hicl push`'s layout, commit and tag
(`hub/push.py`). A push is a job of its own so that the hub being down, slow or refusing never
fails or holds back training: the job is retried with a growing back-off (`backoff`) and, after
a restart, simply claimed again.

A stage is published once. Its identity is the sha256 of every file of its state, as the
catalog records them; before anything is sent, `publish_stage` looks for that stage already
published to the same repo: in the catalog (a `Push` row, only its tag missing if the tag step
failed) and, for a push whose commit landed but whose catalog write did not (the worker died in
between), on the hub itself (the stage's tag and the manifest it points at).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from sqlmodel import select

from ..catalog.db import Catalog
from ..catalog.models import Push
from ..catalog.runs import add_event
from ..core.errors import InvalidInput
from .bundle import MANIFEST_NAME, Bundle, build_bundle
from .push import HubAuthError, HubError, HubForbidden, _Context, _tag, push_bundle, resolve_endpoint

PUSH_ATTEMPTS = 8
BACKOFF_ENV = "HICL_PUSH_BACKOFF"
BACKOFF_FIRST, BACKOFF_MAX = 30.0, 900.0


@dataclass(frozen=True)
class Published:
    """How `publish_stage` ended: "pushed", "already" (the catalog had it), "found" (the hub had
    it; now recorded), "tagged" (only the tag was missing) or "superseded" (a later stage is
    already on the branch: pushing this one now would move the root adapter back)."""

    how: str
    stage_index: int
    repo_id: str
    commit_oid: str | None
    tag: str | None

    @property
    def message(self) -> str:
        where = f"{self.repo_id}@{(self.commit_oid or '')[:12]}"
        stage = self.stage_index + 1  # as users count stages
        return {"pushed": f"stage {stage} pushed to {where}, tag {self.tag}",
                "already": f"stage {stage} was already published to {where}; nothing sent",
                "found": f"stage {stage} was already on the hub ({where}); recorded it",
                "tagged": f"stage {stage} was on {where} without its tag; tagged it {self.tag}",
                "superseded": f"stage {stage} not pushed on its own: a later stage of the run is "
                              f"already on {self.repo_id}, with this stage's files under stages/"}[self.how]


def backoff(attempt: int) -> float:
    """Seconds before try `attempt + 1`: FIRST, doubling, at most MAX (env HICL_PUSH_BACKOFF="FIRST[,MAX]",
    default 30,900)."""
    first, most = BACKOFF_FIRST, BACKOFF_MAX
    raw = os.environ.get(BACKOFF_ENV, "").strip()
    if raw:
        try:
            parts = [float(x) for x in raw.split(",")]
            first, most = parts[0], parts[1] if len(parts) > 1 else max(parts[0], BACKOFF_MAX)
        except (ValueError, IndexError):
            raise InvalidInput(f"{BACKOFF_ENV}={raw!r} is not FIRST[,MAX] in seconds",
                               hint=f"e.g. {BACKOFF_ENV}=30,900") from None
    return max(0.0, min(most, first * 2 ** max(0, attempt - 1)))


def retryable(exc: BaseException) -> bool:
    """A hub that is down or failing (network, 5xx, a tag that did not take) is tried again; a
    token, permission or visibility problem, or a stage whose files changed, needs the user."""
    return isinstance(exc, HubError) and not isinstance(exc, (HubAuthError, HubForbidden))


def check_target(repo_id: str, endpoint: str | None) -> str:
    """The endpoint a run publishes to, resolved once at `run start` and kept in the run's config
    (a background worker may not share the shell's HF_ENDPOINT). An endpoint holding credentials
    is refused: the catalog must not keep them."""
    from urllib.parse import urlsplit

    from .push import check_repo_id

    check_repo_id(repo_id)
    resolved = resolve_endpoint(endpoint)
    parts = urlsplit(resolved)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(f"hub endpoint {resolved!r} is not an http(s) URL", hint="e.g. https://huggingface.co")
    if parts.username or parts.password:
        raise InvalidInput("the hub endpoint holds credentials; the run's record would keep them",
                           hint="give the URL without user:password@ and the token in HF_TOKEN")
    return resolved


def publish_stage(catalog: Catalog, *, run_id: int, stage_index: int, repo_id: str, endpoint: str,
                  private: bool = False, revision: str = "main") -> Published:
    """Publish one stage of a run to `repo_id`, unless it is there already (see the module doc)."""
    with catalog.session() as s:
        bundle = build_bundle(s, run_id, repo_id=repo_id, stage=stage_index)
        pushes = list(s.exec(select(Push).where(Push.run_id == run_id, Push.repo_id == repo_id,
                                                Push.endpoint == endpoint, Push.revision == revision)))
    want = _identity(bundle)
    same = [p for p in pushes if p.stage_index == stage_index and _identity_of(p, stage_index) == want]
    tagged = next((p for p in same if p.tag), None)
    if tagged is not None:
        return Published("already", stage_index, repo_id, tagged.commit_oid, tagged.tag)
    if any(p.stage_index > stage_index for p in pushes):
        _note(catalog, run_id, f"stage {stage_index + 1} not pushed to {repo_id}: a later stage is already there")
        return Published("superseded", stage_index, repo_id, None, None)
    api, ctx = _client(endpoint, repo_id)
    tag = bundle.tag(revision)
    if same:  # committed, but the tag step failed: set the tag on that commit
        row = same[-1]
        with ctx.step(f"tag the commit {tag!r}"):
            _tag(api, repo_id, tag, row.commit_oid, f"hicl run {run_id} stage {stage_index + 1}")
        with catalog.session() as s:
            fresh = s.get(Push, row.id)
            fresh.tag = tag
            s.add(fresh)
        return Published("tagged", stage_index, repo_id, row.commit_oid, tag)
    found = _on_hub(api, ctx, repo_id, tag, stage_index, want, catalog.settings.cache / "hub")
    if found is not None:
        _record(catalog, bundle, repo_id, endpoint, revision, found, tag, private)
        return Published("found", stage_index, repo_id, found, tag)
    result = push_bundle(catalog, bundle, repo_id=repo_id, endpoint=endpoint, revision=revision, private=private,
                         progress=False)
    return Published("pushed", stage_index, repo_id, result.commit_oid, result.tag)


def _identity(bundle: Bundle) -> dict:
    """The stage's files and their sha256, as the manifest of its commit lists them."""
    return dict(bundle.manifest["stages"][bundle.stage_index]["files"])


def _identity_of(push: Push, stage_index: int) -> dict:
    prefix = f"stages/stage-{stage_index + 1}/"  # folders count from 1, as bundle.py writes them
    return {path[len(prefix):]: f["sha256"] for path, f in (push.files or {}).items() if path.startswith(prefix)}


def _client(endpoint: str, repo_id: str):
    """An HfApi for `endpoint` and the context that turns its errors into HubErrors; the token is
    huggingface_hub's (HF_TOKEN, else the saved login) and stays out of every message."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import get_token

    from .. import __version__
    from .push import LOGIN_HINT, HubUnreachable

    if constants.HF_HUB_OFFLINE:
        raise HubUnreachable("the Hugging Face Hub is switched off in this environment (HF_HUB_OFFLINE or "
                             "TRANSFORMERS_OFFLINE is set)", hint="unset HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE")
    token = get_token()
    if not token:
        raise HubAuthError("no Hugging Face token found", hint=LOGIN_HINT)
    api = HfApi(endpoint=endpoint, token=token, library_name="hicl", library_version=__version__)
    return api, _Context(token=token, endpoint=endpoint, repo_id=repo_id)


def _on_hub(api, ctx: _Context, repo_id: str, tag: str, stage_index: int, want: dict, cache) -> str | None:
    """The commit of `tag` when the hub already holds this very stage there, else None."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        refs = api.list_repo_refs(repo_id)
    except RepositoryNotFoundError:
        return None  # no repo yet (or one we cannot see: the push says which)
    except Exception as exc:  # noqa: BLE001 - every failure of a hub call becomes a HubError
        raise ctx.translate(exc, "list the repo's tags") from None
    oid = next((t.target_commit for t in refs.tags if t.name == tag), None)
    if oid is None:
        return None
    with ctx.step(f"read {MANIFEST_NAME} at {tag!r}"):
        path = api.hf_hub_download(repo_id, MANIFEST_NAME, revision=oid, cache_dir=cache)
    with open(path, encoding="utf-8") as fh:
        manifest = json.load(fh)
    stages = manifest.get("stages") or []
    if manifest.get("stage") == stage_index and len(stages) > stage_index and stages[stage_index].get("files") == want:
        return oid
    return None


def _record(catalog: Catalog, bundle: Bundle, repo_id: str, endpoint: str, revision: str, oid: str, tag: str,
            private: bool) -> None:
    with catalog.session() as s:
        push = Push(run_id=bundle.run_id, stage_index=bundle.stage_index, repo_id=repo_id, endpoint=endpoint,
                    revision=revision, commit_oid=oid, commit_url=f"{endpoint}/{repo_id}/commit/{oid}", tag=tag,
                    private=private, files={u.path_in_repo: {"sha256": u.sha256, "size": u.size} for u in bundle.uploads})
        s.add(push)
        s.flush()
        add_event(s, f"stage {bundle.number} found on {repo_id}@{revision} ({oid[:12]}); recorded it",
                  run_id=bundle.run_id, data={"push_id": push.id})


def _note(catalog: Catalog, run_id: int, message: str) -> None:
    with catalog.session() as s:
        add_event(s, message, run_id=run_id, level="warning")


