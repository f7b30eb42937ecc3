"""hicl push: publish a run's adapters to the Hugging Face Hub."""

from __future__ import annotations

import sys

import click

from ..core.errors import InvalidInput
from .context import AppContext, pass_app
from .output import emit_json, info, table
from .runs import _size


@click.command("push")
@click.argument("run_ref", metavar="RUN")
@click.option("--hub", "repo_id", required=True, metavar="REPO_ID", help="Target repo, NAMESPACE/NAME (created if missing).")
@click.option("--stage", type=click.IntRange(1), help="Stage (from 1, as `hicl run show` numbers them) whose adapter goes "
                                                     "at the repo root (default: the last trained).")
@click.option("--private", is_flag=True, help="Create the repo private; refused if it exists and is public.")
@click.option("--revision", default="main", show_default=True, metavar="BRANCH",
              help="Branch to commit to (created from main if missing).")
@click.option("--endpoint", envvar="HF_ENDPOINT", metavar="URL", help="Hub URL, for a private hub (env HF_ENDPOINT).")
@click.option("--dry-run", is_flag=True, help="List exactly what would be uploaded, with sizes; send nothing.")
@click.option("--json", "as_json", is_flag=True,
              help="Print {commit_url, commit_oid, tag, user, private, ..., run_id, stage, files, total_bytes} "
                   "(stage: 0-based index; files: [{path, size, sha256}]); with --dry-run {dry_run, run_id, stage, "
                   "repo_id, revision, endpoint, tag, private, files, total_bytes}.")
@pass_app
def push(app: AppContext, run_ref: str, repo_id: str, stage: int | None, private: bool, revision: str,
         endpoint: str | None, dry_run: bool, as_json: bool) -> None:
    """Publish RUN's adapter (PEFT layout, at the repo root), every stage's state, a manifest and a
    model card to a Hugging Face Hub repo in one commit, and tag it stage-K (K from 1).

    \b
    The token comes from HF_TOKEN or your `hf auth login`; it is never stored or shown.
    Load the result with: PeftModel.from_pretrained(base_model, "REPO_ID")
    """
    from ..hub.bundle import build_bundle
    from ..hub.push import check_repo_id, push_bundle, resolve_endpoint
    from ..hub.redact import plain_http_warning, public_endpoint

    check_repo_id(repo_id)
    if not revision or revision.startswith("refs/") or revision != revision.strip():
        raise InvalidInput(f"--revision {revision!r} is not a branch name", hint="pass a branch, e.g. --revision main")
    with app.catalog.session() as s:
        bundle = build_bundle(s, run_ref, repo_id=repo_id, stage=None if stage is None else stage - 1)
    endpoint = resolve_endpoint(endpoint)
    shown = public_endpoint(endpoint)  # never echo a user:password@ the URL may carry
    files = [u.as_dict() for u in bundle.uploads]
    where = f"{repo_id}@{revision} on {shown}"
    if bundle.stage_index < bundle.n_stages - 1 and stage is None:
        info(f"run {bundle.run_id} is {bundle.run_status}: stage {bundle.number} is the last trained "
             f"of {bundle.n_stages}")
    if dry_run:
        if as_json:
            emit_json({"dry_run": True, "run_id": bundle.run_id, "stage": bundle.stage_index, "repo_id": repo_id,
                       "revision": revision, "endpoint": shown, "tag": bundle.tag(revision), "private": private,
                       "files": files, "total_bytes": bundle.total_bytes})
            return
        info(f"dry run: would push run {bundle.run_id} ({bundle.run_name}) stage {bundle.number} to {where} "
             f"in one commit, tagged {bundle.tag(revision)!r}")
        click.echo(table(["path", "size", "bytes", "sha256"],
                         [[f["path"], _size(f["size"]), f["size"], f["sha256"][:16]] for f in files]))
        click.echo(f"{len(files)} files, {_size(bundle.total_bytes)} ({bundle.total_bytes} bytes)")
        return
    warning = plain_http_warning(endpoint)
    if warning:
        info(f"warning: {warning}")
    if not as_json:
        info(f"pushing run {bundle.run_id} stage {bundle.number}: {len(files)} files, "
             f"{_size(bundle.total_bytes)} to {where}")
    result = push_bundle(app.catalog, bundle, repo_id=repo_id, endpoint=endpoint, revision=revision, private=private,
                         progress=sys.stderr.isatty() and not as_json)
    if as_json:
        emit_json({**result.as_dict(), "run_id": bundle.run_id, "stage": bundle.stage_index, "files": files,
                   "total_bytes": bundle.total_bytes})
        return
    click.echo(result.commit_url)
    info(f"pushed as {result.user}: commit {result.commit_oid[:12]}, tag {result.tag!r}"
         f"{', private' if result.private else ''}")


COMMANDS = [push]
