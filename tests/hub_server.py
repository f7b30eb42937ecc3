"""A small Hugging Face Hub look-alike on 127.0.0.1, for driving the real huggingface_hub client.

It implements the HTTP API that `HfApi` (2.x, with HF_HUB_DISABLE_XET=1) calls to push and to
fetch back: whoami, repo create, model info (by revision), YAML validation, preupload, the LFS
batch API with a basic PUT transfer, the NDJSON commit, branches, tags, refs, the tree listing and
file resolve (HEAD/GET). Repos, commits and blobs live in memory.

Auth: tokens map to users; a missing or unknown token is a 401, writing to a repo (or creating
one in a namespace) that is not the user's is a 403, a private repo is invisible (404) to others.
`fail_commit` makes the next commit fail ("500", or "drop": close the connection unanswered)
to test that a push breaking off publishes nothing. `down` ("503" or "drop") makes every request
fail that way until it is cleared: a hub that is down for a while.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Entry:
    """A file in a commit's tree."""

    size: int
    sha256: str
    lfs: bool

    def oid(self, blobs: dict[str, bytes]) -> str:
        if self.lfs:  # git stores the pointer file; its oid is what the Hub reports
            return git_blob_oid(self.pointer())
        return git_blob_oid(blobs[self.sha256])

    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    description: str
    files: dict[str, Entry]


@dataclass
class Repo:
    repo_id: str
    owner: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        oid = self.branches.get(rev) or self.tags.get(rev)
        if oid is None:
            matches = [c for c in self.commits if c.startswith(rev)] if len(rev) >= 7 else []
            oid = matches[0] if len(matches) == 1 else None
        return self.commits.get(oid) if oid else None


class FakeHub:
    """The server's state and a handle to run it: `with FakeHub(users) as hub: hub.endpoint`."""

    def __init__(self, tokens: dict[str, tuple[str, str]]):
        self.tokens = tokens  # token -> (user, role: "write" | "read")
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}  # sha256 -> content
        self.requests: list[tuple[str, str]] = []
        self.fail_commit: str | None = None
        self.down: str | None = None
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None

    # --- running -------------------------------------------------------------------------------
    def __enter__(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            state = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- inspection for tests -----------------------------------------------------------------
    def head(self, repo_id: str, rev: str = "main") -> Commit | None:
        repo = self.repos.get(repo_id)
        return repo.resolve(rev) if repo else None

    def file(self, repo_id: str, path: str, rev: str = "main") -> bytes:
        entry = self.head(repo_id, rev).files[path]
        return self.blobs[entry.sha256]

    # --- state changes ----------------------------------------------------------------------------
    def create_repo(self, repo_id: str, owner: str, private: bool) -> Repo:
        with self.lock:
            repo = Repo(repo_id, owner, private)
            self.repos[repo_id] = repo
            self._store(GITATTRIBUTES)
            first = self._commit(repo, None, "initial commit", "",
                                 {".gitattributes": Entry(len(GITATTRIBUTES), hashlib.sha256(GITATTRIBUTES).hexdigest(), False)})
            repo.branches["main"] = first.oid
            return repo

    def _store(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self.blobs[sha] = data
        return sha

    def _commit(self, repo: Repo, parent: Commit | None, title: str, description: str, files: dict) -> Commit:
        body = json.dumps([parent.oid if parent else None, title, description,
                           sorted((p, e.sha256) for p, e in files.items()), len(repo.commits)])
        commit = Commit(hashlib.sha1(body.encode()).hexdigest(), parent.oid if parent else None, title,
                        description, files)
        repo.commits[commit.oid] = commit
        return commit


class HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: FakeHub

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    # --- plumbing ----------------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self):
        return json.loads(self.raw) if self.raw else {}

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json",
              headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        raw_parts = [p for p in url.path.split("/") if p]
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.state.requests.append((method, url.path))
        self.raw = self._body() if method in ("POST", "PUT", "DELETE") else b""
        try:
            if self.state.down == "drop":
                raise _Drop()
            if self.state.down:
                raise HttpError(503, "Service Unavailable")
            with self.state.lock:
                self._route(method, raw_parts)
        except HttpError as exc:
            headers = {"X-Error-Message": exc.message}
            if exc.code:
                headers["X-Error-Code"] = exc.code
            self._json({"error": exc.message, **exc.extra}, exc.status, headers)
        except _Drop:
            self.close_connection = True
            self.connection.shutdown(2)

    # --- auth ----------------------------------------------------------------------------------------
    def _user(self, required: bool = True) -> tuple[str, str] | None:
        header = self.headers.get("Authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else None
        if token in self.state.tokens:
            return self.state.tokens[token]
        if required or token:
            raise HttpError(401, "Invalid credentials in Authorization header")
        return None

    def _repo(self, ns: str, name: str, *, write: bool = False) -> Repo:
        repo_id = f"{unquote(ns)}/{unquote(name)}"
        who = self._user(required=write)
        repo = self.state.repos.get(repo_id)
        user = who[0] if who else None
        if repo is None or (repo.private and repo.owner != user):
            raise HttpError(404, "Repository not found", "RepoNotFound")
        if write and (repo.owner != user or who[1] != "write"):
            raise HttpError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    # --- routes ----------------------------------------------------------------------------------------
    def _route(self, method: str, p: list[str]) -> None:
        s = self.state
        if method == "GET" and p == ["api", "whoami-v2"]:
            user, role = self._user()
            return self._json({"type": "user", "name": user, "fullname": user.title(), "orgs": [],
                               "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": role}}})
        if method == "POST" and p == ["api", "repos", "create"]:
            user, role = self._user()
            body = self._json_body()
            ns = body.get("organization") or user
            repo_id = f"{ns}/{body['name']}"
            if ns != user or role != "write":
                raise HttpError(403, f"You don't have the rights to create a model under the namespace \"{ns}\"")
            if repo_id in s.repos:
                raise HttpError(409, "You already created this model repo", url=f"{self._base()}/{repo_id}")
            s.create_repo(repo_id, user, body.get("visibility") == "private" or bool(body.get("private")))
            return self._json({"url": f"{self._base()}/{repo_id}", "name": repo_id})
        if method == "POST" and p == ["api", "validate-yaml"]:
            body = self._json_body()
            try:
                yaml.safe_load(body["content"].split("---")[1])
            except Exception as exc:  # noqa: BLE001
                raise HttpError(400, f"invalid YAML: {exc}") from None
            return self._json({"errors": [], "warnings": []})
        if len(p) >= 4 and p[0] == "api" and p[1] == "models":
            return self._route_repo_api(method, p[2], p[3], p[4:])
        if len(p) >= 2 and p[0] == "_lfs" and method == "PUT":
            return self._lfs_put(p[1])
        if len(p) >= 3 and p[1].endswith(".git") and p[2:] == ["info", "lfs", "objects", "batch"] and method == "POST":
            return self._lfs_batch(p[0], p[1][:-4])
        if len(p) >= 5 and p[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(p[0], p[1], unquote(p[3]), unquote("/".join(p[4:])))
        raise HttpError(404, f"no route for {method} {self.path}")

    def _base(self) -> str:
        return self.state.endpoint

    def _route_repo_api(self, method: str, ns: str, name: str, rest: list[str]) -> None:
        if method == "GET" and (not rest or rest[0] == "revision"):
            repo = self._repo(ns, name)
            rev = unquote(rest[1]) if rest else "main"
            commit = repo.resolve(rev)
            if commit is None:
                raise HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return self._json({"id": repo.repo_id, "author": repo.owner, "sha": commit.oid, "private": repo.private,
                               "tags": [], "siblings": [{"rfilename": f} for f in sorted(commit.files)]})
        if method == "GET" and rest and rest[0] == "tree":
            repo = self._repo(ns, name)
            commit = repo.resolve(unquote(rest[1]))
            if commit is None:
                raise HttpError(404, "Invalid rev id", "RevisionNotFound")
            return self._json(self._tree(commit, unquote("/".join(rest[2:])),
                                         self.query.get("recursive", "").lower() in ("1", "true")))
        if method == "GET" and rest == ["refs"]:
            repo = self._repo(ns, name)
            return self._json({
                "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": o} for b, o in repo.branches.items()],
                "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": o} for t, o in repo.tags.items()],
                "converts": []})
        if method == "POST" and rest and rest[0] == "preupload":
            repo = self._repo(ns, name, write=True)
            body = self._json_body()
            commit = repo.resolve(unquote(rest[1]))
            files = []
            for f in body["files"]:
                lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] >= LFS_MIN_SIZE
                existing = commit.files.get(f["path"]) if commit else None
                oid = None
                if existing is not None:
                    oid = existing.sha256 if existing.lfs else existing.oid(self.state.blobs)
                files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                              "shouldIgnore": False, "oid": oid})
            return self._json({"files": files, "commitOid": commit.oid if commit else None})
        if method == "POST" and rest and rest[0] == "commit":
            return self._commit(self._repo(ns, name, write=True), unquote(rest[1]))
        if method == "POST" and rest and rest[0] == "branch":
            repo = self._repo(ns, name, write=True)
            body = self._json_body()
            branch = unquote(rest[1])
            if branch in repo.branches:
                raise HttpError(409, f"Branch {branch} already exists")
            start = repo.resolve(body.get("startingPoint") or "main")
            repo.branches[branch] = start.oid
            return self._json({})
        if method == "POST" and rest and rest[0] == "tag":
            repo = self._repo(ns, name, write=True)
            body = self._json_body()
            commit = repo.resolve(unquote(rest[1]))
            if commit is None:
                raise HttpError(404, "Invalid rev id", "RevisionNotFound")
            if body["tag"] in repo.tags:
                raise HttpError(409, f"Tag {body['tag']} already exists")
            repo.tags[body["tag"]] = commit.oid
            return self._json({})
        if method == "DELETE" and rest and rest[0] == "tag":
            repo = self._repo(ns, name, write=True)
            if repo.tags.pop(unquote(rest[1]), None) is None:
                raise HttpError(404, "Tag not found")
            return self._json({})
        raise HttpError(404, f"no route for {method} {self.path}")

    def _tree(self, commit: Commit, prefix: str, recursive: bool) -> list[dict]:
        prefix = prefix.strip("/")
        out, folders = [], set()
        for path in sorted(commit.files):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1:] if prefix else path
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(([prefix] if prefix else []) + parts[:depth])
                if folder not in folders and (recursive or depth == 1):
                    folders.add(folder)
                    out.append({"type": "directory", "path": folder, "oid": hashlib.sha1(folder.encode()).hexdigest()})
            if len(parts) > 1 and not recursive:
                continue
            e = commit.files[path]
            item = {"type": "file", "path": path, "size": e.size, "oid": e.oid(self.state.blobs)}
            if e.lfs:
                item["lfs"] = {"oid": e.sha256, "size": e.size, "pointerSize": len(e.pointer())}
            out.append(item)
        return out

    def _commit(self, repo: Repo, revision: str) -> None:
        raw = self.raw
        if self.state.fail_commit:
            mode, self.state.fail_commit = self.state.fail_commit, None
            if mode == "drop":
                raise _Drop()
            raise HttpError(500, "Internal Error - We're working hard to fix this as soon as possible!")
        parent = repo.resolve(revision)
        if parent is None or revision not in repo.branches:
            raise HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        files = dict(parent.files)
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "file":
                data = base64.b64decode(value["content"])
                files[value["path"]] = Entry(len(data), self.state._store(data), False)
            elif key == "lfsFile":
                blob = self.state.blobs.get(value["oid"])
                if blob is None or ("size" in value and len(blob) != value["size"]):
                    raise HttpError(422, f"LFS object {value['oid']} was not uploaded")
                files[value["path"]] = Entry(len(blob), value["oid"], True)
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {k: v for k, v in files.items() if not k.startswith(value["path"].rstrip("/") + "/")}
            elif key != "header":
                raise HttpError(400, f"unknown commit operation {key}")
        commit = self.state._commit(repo, parent, header["summary"], header.get("description", ""), files)
        repo.branches[revision] = commit.oid
        return self._json({"commitUrl": f"{self._base()}/{repo.repo_id}/commit/{commit.oid}",
                           "commitOid": commit.oid, "success": True})

    def _lfs_batch(self, ns: str, name: str) -> None:
        self._repo(ns, name, write=True)
        body = self._json_body()
        objects = []
        for obj in body["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.state.blobs:
                entry["actions"] = {"upload": {"href": f"{self._base()}/_lfs/{obj['oid']}"}}
            objects.append(entry)
        return self._json({"transfer": "basic", "objects": objects})

    def _lfs_put(self, oid: str) -> None:
        data = self.raw
        if hashlib.sha256(data).hexdigest() != oid:
            raise HttpError(400, "content does not match its sha256")
        self.state.blobs[oid] = data
        return self._send(200, b"")

    def _resolve(self, ns: str, name: str, rev: str, path: str) -> None:
        repo = self._repo(ns, name)
        commit = repo.resolve(rev)
        if commit is None:
            raise HttpError(404, "Invalid rev id", "RevisionNotFound")
        entry = commit.files.get(path)
        if entry is None:
            raise HttpError(404, "Entry not found", "EntryNotFound")
        data = self.state.blobs[entry.sha256]
        etag = entry.sha256 if entry.lfs else entry.oid(self.state.blobs)
        return self._send(200, data, "application/octet-stream",
                          {"X-Repo-Commit": commit.oid, "ETag": f'"{etag}"', "Accept-Ranges": "none"})


class _Drop(Exception):
    """Close the connection without an answer, as a network that breaks off would."""


