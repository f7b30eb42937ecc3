"""Publishing a bundle to a Hugging Face Hub repo in one commit, then tagging it.

Order matters so that a failure leaves nothing half-published: every local check (hashes,
manifest, card) is done before the first request; then the token and the account are checked
(`whoami`), the repo is created or found, its visibility checked, and only then is the single
commit sent. The Hub applies a commit whole or not at all, so an upload that breaks off leaves
the repo as it was. The token is read by huggingface_hub (HF_TOKEN, else the saved login) and
never stored, logged or shown: every message built from a hub reply is scrubbed of it, and of
credentials embedded in the endpoint URL (hub/redact.py).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from ..catalog.db import Catalog
from ..catalog.models import Push
from ..catalog.runs import add_event
from ..core.errors import Conflict, HiclError, InvalidInput
from .bundle import Bundle
from .redact import endpoint_secrets, public_endpoint, scrub

LOGIN_HINT = "set HF_TOKEN to a token with write access, or run `hf auth login`"


class HubError(HiclError):
    """The hub refused or failed the push; nothing was committed unless the message says so."""


class HubAuthError(HubError):
    """No token, or a token the hub does not accept."""


class HubForbidden(HubError):
    """The token is valid but may not write to this repo."""


class HubUnreachable(HubError):
    """The hub could not be reached (network down, wrong endpoint, offline mode)."""


class HubVisibilityConflict(Conflict):
    """--private was asked for a repo that already exists and is public."""


@dataclass(frozen=True)
class PushResult:
    push_id: int
    repo_id: str
    endpoint: str
    revision: str
    commit_oid: str
    commit_url: str
    tag: str
    private: bool
    user: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def resolve_endpoint(endpoint: str | None) -> str:
    """`--endpoint`, else HF_ENDPOINT, else huggingface_hub's default (huggingface.co)."""
    from huggingface_hub import constants

    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def check_repo_id(repo_id: str) -> str:
    """NAMESPACE/NAME, as the Hub spells repo ids; checked before anything else happens."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if repo_id.count("/") != 1:
        raise InvalidInput(f"--hub {repo_id!r} is not NAMESPACE/NAME",
                           hint="name the owner too, e.g. --hub alice/hicl-seq-lora")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise InvalidInput(f"--hub {repo_id!r} is not a valid repo id: {exc}") from None
    return repo_id


def push_bundle(catalog: Catalog, bundle: Bundle, *, repo_id: str, endpoint: str | None = None,
                revision: str = "main", private: bool = False, progress: bool = True) -> PushResult:
    """Commit `bundle` to `repo_id` at `revision`, tag it, record the push in the catalog.

    `progress=False` silences huggingface_hub's upload bars (for --json or a log file).
    """
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    try:
        return _push(catalog, bundle, repo_id=repo_id, endpoint=endpoint, revision=revision, private=private)
    finally:
        if not progress and not was_disabled:
            enable_progress_bars()


def _push(catalog: Catalog, bundle: Bundle, *, repo_id: str, endpoint: str | None, revision: str,
          private: bool) -> PushResult:
    from huggingface_hub import CommitOperationAdd, HfApi, constants
    from huggingface_hub.utils import get_token

    from .. import __version__

    endpoint = resolve_endpoint(endpoint)
    if constants.HF_HUB_OFFLINE:
        raise HubUnreachable("the Hugging Face Hub is switched off in this environment (HF_HUB_OFFLINE or "
                             "TRANSFORMERS_OFFLINE is set)", hint="unset HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE to push")
    token = get_token()
    if not token:
        raise HubAuthError("no Hugging Face token found", hint=LOGIN_HINT)
    api = HfApi(endpoint=endpoint, token=token, library_name="hicl", library_version=__version__)
    ctx = _Context(token=token, endpoint=public_endpoint(endpoint), repo_id=repo_id,
                   secrets=endpoint_secrets(endpoint))
    endpoint = ctx.endpoint  # shown and recorded without user info from here on

    with ctx.step("check the token"):
        me = api.whoami()
    ctx.user = ctx.scrub(str(me.get("name") or "?"))  # a server may echo the token back as the name
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubForbidden(f"the token of {ctx.user!r} is read-only; it cannot push to {repo_id}", hint=LOGIN_HINT)

    with ctx.step("create or find the repo"):
        api.create_repo(repo_id, private=True if private else None, exist_ok=True)
        info = api.repo_info(repo_id)
    if private and not info.private:
        raise HubVisibilityConflict(f"{repo_id} already exists and is public; --private would not hide what is pushed",
                                    hint="make the repo private on the hub first, or push to a new repo")
    if revision != "main":
        with ctx.step(f"create the branch {revision!r}"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)

    operations = []
    for up in bundle.uploads:
        op = CommitOperationAdd(path_in_repo=up.path_in_repo,
                                path_or_fileobj=up.data if up.data is not None else str(up.source))
        op.upload_info.sha256 = bytes.fromhex(up.sha256)  # verified against the catalog just before
        operations.append(op)
    with ctx.step("upload and commit"):
        commit = api.create_commit(
            repo_id, operations, revision=revision,
            commit_message=f"hicl: {bundle.run_name} (run {bundle.run_id}), stage {bundle.number}",
            commit_description=(f"Adapter after stage {bundle.number} of {bundle.n_stages} at the root, "
                                f"stages 1..{bundle.number} under stages/, manifest in hicl.json."),
        )
    ctx.committed = True

    tag = bundle.tag(revision)
    tag_error = None
    try:
        with ctx.step(f"tag the commit {tag!r}"):
            _tag(api, repo_id, tag, commit.oid, f"hicl run {bundle.run_id} stage {bundle.number}")
    except HubError as exc:
        tag_error = exc

    push = Push(run_id=bundle.run_id, stage_index=bundle.stage_index, repo_id=repo_id, endpoint=endpoint,
                revision=revision, commit_oid=commit.oid, commit_url=str(commit.commit_url),
                tag=None if tag_error else tag, private=bool(info.private),
                files={u.path_in_repo: {"sha256": u.sha256, "size": u.size} for u in bundle.uploads})
    with catalog.session() as s:
        s.add(push)
        s.flush()
        add_event(s, f"stage {bundle.number} pushed to {repo_id}@{revision}: {commit.oid[:12]}",
                  run_id=bundle.run_id, data={"push_id": push.id, "commit_url": str(commit.commit_url)})
    if tag_error is not None:
        raise HubError(f"pushed {commit.commit_url}, but the tag could not be set: {tag_error}",
                       hint=f"run the push again to set the tag {tag!r}")
    return PushResult(push_id=push.id, repo_id=repo_id, endpoint=endpoint, revision=revision, commit_oid=commit.oid,
                      commit_url=str(commit.commit_url), tag=tag, private=bool(info.private), user=ctx.user)


def _tag(api, repo_id: str, tag: str, oid: str, message: str) -> None:
    """Point `tag` at `oid`, moving it if an earlier push of the same stage set it."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_tag(repo_id, tag=tag, revision=oid, tag_message=message)
    except HfHubHTTPError as exc:
        if exc.response is None or exc.response.status_code != 409:
            raise
        api.delete_tag(repo_id, tag=tag)
        api.create_tag(repo_id, tag=tag, revision=oid, tag_message=message)


@dataclass
class _Context:
    """Turns what huggingface_hub raises during one step into a HubError a user can act on."""

    token: str
    endpoint: str
    repo_id: str
    user: str = "?"
    committed: bool = False
    secrets: list[str] | None = None  # besides the token: credentials embedded in the endpoint URL

    @property
    def outcome(self) -> str:
        return "" if self.committed else "; nothing was pushed"

    def scrub(self, text: str) -> str:
        return scrub(text, [self.token, *(self.secrets or [])])

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        try:
            yield
        except HiclError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure of a hub call becomes a HubError
            raise self.translate(exc, what) from None

    def translate(self, exc: Exception, what: str) -> HubError:
        from huggingface_hub.errors import (
            HfHubHTTPError,
            LocalTokenNotFoundError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
        )

        chain = _chain(exc)
        if any(isinstance(e, LocalTokenNotFoundError) for e in chain):
            return HubAuthError("no Hugging Face token found", hint=LOGIN_HINT)
        if any(isinstance(e, OfflineModeIsEnabled) for e in chain):
            return HubUnreachable("the Hugging Face Hub is switched off (HF_HUB_OFFLINE is set)",
                                  hint="unset HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE to push")
        http = next((e for e in chain if isinstance(e, HfHubHTTPError) and e.response is not None), None)
        if http is not None:
            status = http.response.status_code
            detail = self.scrub(_server_message(http))
            if status == 401 and what == "check the token":
                return HubAuthError(f"{self.endpoint} rejected the token (401 Unauthorized)", hint=LOGIN_HINT)
            if status in (401, 403) or isinstance(http, RepositoryNotFoundError):
                return HubForbidden(
                    f"{self.user!r} may not write to {self.repo_id} ({status}{': ' + detail if detail else ''}); "
                    f"failed to {what}{self.outcome}",
                    hint=f"the repo or its namespace belongs to someone else, or the token cannot write there: "
                         f"push to a repo of your own (e.g. {self.user}/{self.repo_id.split('/')[-1]}) "
                         f"or use a token with write access to it")
            return HubError(f"the hub answered {status} while trying to {what}"
                            f"{': ' + detail if detail else ''}{self.outcome}")
        if any(_is_network_error(e) for e in chain):
            root = chain[-1]
            return HubUnreachable(f"cannot reach {self.endpoint} to {what} ({type(root).__name__}: "
                                  f"{self.scrub(str(root)) or 'no answer'}){self.outcome}",
                                  hint="check the network, or --endpoint / HF_ENDPOINT for a private hub")
        return HubError(f"failed to {what}: {type(exc).__name__}: {self.scrub(str(exc))}{self.outcome}")


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _is_network_error(exc: BaseException) -> bool:
    """Connection refused, DNS, timeouts, a connection dropped mid-request, whatever HTTP library
    huggingface_hub runs on (httpx2 today) - recognised by its exception family."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return any(cls.__name__ in ("TransportError", "RequestError", "ConnectionError") for cls in type(exc).__mro__)


def _server_message(http) -> str:
    """The hub's own explanation: the X-Error-Message header or the JSON body's `error`."""
    response = http.response
    message = response.headers.get("X-Error-Message")
    if not message:
        try:
            body = response.json()
            message = body.get("error") if isinstance(body, dict) else None
        except Exception:  # noqa: BLE001 - a body that is not JSON has no message for us
            message = None
    return str(message or "").strip().rstrip(".")
