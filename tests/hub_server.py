"""A small Hugging Face Hub stand-in for tests: an HTTP server on 127.0.0.1.

It speaks the subset of the Hub API that `huggingface_hub` 2.4 uses to create a repo, commit
files and download them again, so tests run the real client code path (``HfApi``,
``hf_hub_download``, ``from_pretrained``, ``SAE.from_pretrained``) with ``HF_ENDPOINT`` pointing
here:

- ``GET  /api/whoami-v2``
- ``POST /api/repos/create``
- ``POST /api/validate-yaml`` (README metadata check done by ``create_commit``)
- ``POST /api/{type}s/{repo}/preupload/{rev}``: "lfs" for files that the repo's
  ``.gitattributes`` sends to LFS (``*.safetensors``, ``*.bin``, ... as on the Hub) or of 10 MiB
  and more, "regular" (base64 inside the commit) otherwise
- ``POST /[{type}s/]{repo}.git/info/lfs/objects/batch``: the git-LFS batch API ("basic"
  transfer): an upload action (a signed URL on the storage origin) and a verify action per
  object not yet stored, no actions for one already stored
- ``PUT {storage}/lfs/{type}/{repo}/{oid}?signature=...``: the upload (on the storage origin,
  ``http://localhost:<port>``, a different origin from the Hub's ``http://127.0.0.1:<port>``
  as a CDN's is: the client must not send it the token); ``POST /__lfs/verify/...``: verify
- ``POST /api/{type}s/{repo}/commit/{rev}``: the NDJSON commit payload, with ``file`` (base64)
  and ``lfsFile`` (sha256 of an uploaded object) entries
- ``GET  /api/{type}s/{repo}`` and ``/api/{type}s/{repo}/revision/{rev}``: repo info
- ``GET  /api/{type}s/{repo}/tree/{rev}[/{path}]`` and ``POST .../paths-info/{rev}``
- ``HEAD|GET /[{type}s/]{repo}/resolve/{rev}/{path}``: file metadata and content; an LFS file
  answers 302 to the storage origin with ``X-Linked-Etag`` (its sha256) and ``X-Linked-Size``,
  as the Hub does

Errors carry the ``X-Error-Code`` headers that ``huggingface_hub`` maps to its exceptions
(``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``). Private repos need the token.
Tests inject failures with :meth:`HubServer.fail` and read :attr:`HubServer.requests`.

Xet storage (what ``huggingface_hub`` uses by default when ``hf_xet`` is installed) is not
emulated: its CAS protocol is spoken by a compiled client. Clients of this server set
``HF_HUB_DISABLE_XET=1``, which sends large files through the LFS path above.

Run it by hand with ``python tests/hub_server.py --port 8765 --token hf_xxx``.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

REPO_TYPES = ("model", "dataset", "space")


# What the Hub's initial commit puts in .gitattributes (abridged): these go to LFS.
GITATTRIBUTES = b"".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n".encode()
    for pattern in ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.onnx", "*.zip")
)
# Files this large go to LFS whatever their name (the Hub's threshold).
LFS_THRESHOLD_BYTES = 10 * 1024 * 1024


def git_blob_oid(content: bytes) -> str:
    """The git blob SHA-1 of `content`: the oid the Hub reports for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def lfs_pointer(content: bytes) -> bytes:
    """The git-LFS pointer file the repo's git tree holds for an LFS file."""
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256_hex(content)}\n"
        f"size {len(content)}\n"
    ).encode()


def lfs_patterns(gitattributes: bytes | None) -> list[str]:
    """The patterns a `.gitattributes` sends to LFS (`filter=lfs`)."""
    lines = (gitattributes or b"").decode("utf-8", "replace").splitlines()
    return [line.split()[0] for line in lines if line.strip() and "filter=lfs" in line.split()]


def goes_to_lfs(path: str, size: int, patterns: list[str]) -> bool:
    """Whether the Hub would store `path` in LFS: a `.gitattributes` match, or a large file."""
    name = path.rsplit("/", 1)[-1]
    matched = any(fnmatch.fnmatchcase(path if "/" in p else name, p) for p in patterns)
    return matched or size >= LFS_THRESHOLD_BYTES


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, bytes]
    parent: str | None
    created_at: float = field(default_factory=time.time)
    # path -> sha256 of the files stored in LFS (their git tree holds a pointer file).
    lfs: dict[str, str] = field(default_factory=dict)

    def entry(self, path: str) -> dict[str, Any]:
        """The tree / paths-info entry of a file, with its `lfs` block when it is in LFS."""
        content = self.files[path]
        if path not in self.lfs:
            return {
                "type": "file",
                "oid": git_blob_oid(content),
                "size": len(content),
                "path": path,
            }
        pointer = lfs_pointer(content)
        return {
            "type": "file",
            "oid": git_blob_oid(pointer),
            "size": len(content),
            "path": path,
            "lfs": {"oid": self.lfs[path], "size": len(content), "pointerSize": len(pointer)},
        }


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)
    branches: dict[str, str] = field(default_factory=dict)
    # LFS storage: sha256 -> content of every object uploaded (committed or not).
    lfs_objects: dict[str, bytes] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        """A branch name or a (full or 7+ character) commit oid."""
        oid = self.branches.get(revision)
        for commit in self.commits:
            if commit.oid == oid or (len(revision) >= 7 and commit.oid.startswith(revision)):
                return commit
        return None


@dataclass
class Failure:
    """Answer requests whose ``METHOD path`` matches `pattern` with `status`, `times` times."""

    pattern: re.Pattern
    status: int
    times: int


class HubServer:
    """The Hub stand-in: in-memory repos behind a threaded HTTP server on 127.0.0.1."""

    def __init__(self, token: str | None = None, user: str = "test-user", port: int = 0) -> None:
        self.token = token
        self.user = user
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[dict[str, Any]] = []
        self.failures: list[Failure] = []
        self._signing_key = secrets.token_bytes(16)
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def storage(self) -> str:
        """The LFS storage origin: the same server under another host name, as a CDN is."""
        return f"http://localhost:{self._httpd.server_address[1]}"

    def sign(self, *parts: str) -> str:
        """The signature of a storage URL (a signed URL needs no token)."""
        return hmac.new(self._signing_key, "/".join(parts).encode(), "sha256").hexdigest()

    def lfs_files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict:
        """The files of `repo_id` at `revision` stored in LFS (path -> sha256)."""
        commit = self.repos[(repo_type, repo_id)].resolve(revision)
        return dict(commit.lfs) if commit else {}

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail(self, pattern: str, status: int = 500, times: int = 1_000_000) -> None:
        """Make requests matching `pattern` (regex on ``"METHOD /path"``) answer `status`."""
        with self._lock:
            self.failures.append(Failure(re.compile(pattern), status, times))

    def heal(self) -> None:
        """Stop injecting failures."""
        with self._lock:
            self.failures.clear()

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict:
        """The files of `repo_id` at `revision` (path -> bytes)."""
        commit = self.repos[(repo_type, repo_id)].resolve(revision)
        return dict(commit.files) if commit else {}

    # -- internal -----------------------------------------------------------------------------

    def _take_failure(self, key: str) -> int | None:
        with self._lock:
            for failure in self.failures:
                if failure.times > 0 and failure.pattern.search(key):
                    failure.times -= 1
                    return failure.status
        return None


class _HubError(Exception):
    def __init__(
        self, status: int, message: str, code: str | None = None, commit: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit


_API_REPO = re.compile(
    r"^/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+(?:/[^/]+)?)"
    r"(?:/(?P<op>revision|tree|paths-info|preupload|commit)(?:/(?P<rest>.*))?)?$"
)
_LFS_BATCH = re.compile(
    r"^/(?:(?P<type>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$"
)
_LFS_OBJECT = re.compile(
    r"^/__lfs/(?P<verify>verify/)?(?:(?P<type>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)/"
    r"(?P<oid>[0-9a-f]{64})$"
)
_RESOLVE = re.compile(
    r"^/(?:(?P<type>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+|[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"
)


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "hub-test-server/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
            pass

        # -- plumbing ---------------------------------------------------------------------

        def _body(self) -> bytes:
            return self._raw_body

        def _send(
            self,
            status: int,
            payload: Any = None,
            *,
            raw: bytes | None = None,
            headers: dict[str, str] | None = None,
            head: bool = False,
        ) -> None:
            data = raw if raw is not None else json.dumps(payload).encode()
            self.send_response(status)
            self._record["status"] = status
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if raw is None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)

        def _error(self, error: _HubError, head: bool = False) -> None:
            headers = {"X-Error-Message": error.message}
            if error.code:
                headers["X-Error-Code"] = error.code
            if error.commit:
                headers["X-Repo-Commit"] = error.commit
            self._send(error.status, {"error": error.message}, headers=headers, head=head)

        def _auth(self) -> str | None:
            """The bearer token sent, checked against the server's token when one is set."""
            value = self.headers.get("Authorization", "")
            if not value.startswith("Bearer "):
                return None
            token = value[len("Bearer ") :]
            if hub.token is not None and token != hub.token:
                raise _HubError(401, "Invalid credentials in Authorization header")
            return token

        def _require_auth(self) -> None:
            if self._auth() is None:
                raise _HubError(401, "Invalid username or password.")

        def _repo(self, repo_type: str, repo_id: str) -> Repo:
            repo = hub.repos.get((repo_type, repo_id))
            # The Hub answers 401 for private repos without credentials, like for missing ones.
            if repo is None or (repo.private and self._auth() is None):
                raise _HubError(
                    401 if self._auth() is None else 404,
                    "Repository not found",
                    code="RepoNotFound",
                )
            return repo

        def _commit(self, repo: Repo, revision: str) -> Commit:
            commit = repo.resolve(unquote(revision))
            if commit is None:
                raise _HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
            return commit

        def _dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            path, query = unquote(url.path), parse_qs(url.query)
            record = {
                "method": method,
                "path": path,
                "host": self.headers.get("Host"),
                "authorization": self.headers.get("Authorization"),
            }
            self._record = record
            with hub._lock:
                hub.requests.append(record)
            head = method == "HEAD"
            # Read the whole body first: the connection is kept alive, so an unread body
            # would be taken for the next request.
            self._raw_body = self._read_body()
            try:
                status = hub._take_failure(f"{method} {path}")
                if status is not None:
                    raise _HubError(status, f"Injected failure {status}")
                self._route(method, path, query, head)
            except _HubError as error:
                self._error(error, head=head)

        def _read_body(self) -> bytes:
            """The request body, sent with a Content-Length or chunked."""
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline().strip():  # trailers
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()  # the CRLF after each chunk
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_POST(self) -> None:
            self._dispatch("POST")

        # -- routes -----------------------------------------------------------------------

        def _route(self, method: str, path: str, query: dict, head: bool) -> None:
            if path == "/api/whoami-v2" and method == "GET":
                return self._whoami()
            if path == "/api/repos/create" and method == "POST":
                return self._create_repo()
            if path == "/api/validate-yaml" and method == "POST":
                return self._validate_yaml()
            match = _LFS_BATCH.match(path)
            if match and method == "POST":
                return self._lfs_batch((match["type"] or "models")[:-1], match["repo"])
            match = _LFS_OBJECT.match(path)
            if match:
                return self._lfs_object(method, match, query, head)
            match = _API_REPO.match(path)
            if match:
                repo_type = match["type"][:-1]
                op, rest = match["op"], match["rest"] or ""
                if op is None and method == "GET":
                    return self._repo_info(repo_type, match["repo"], "main")
                if op == "revision" and method == "GET":
                    return self._repo_info(repo_type, match["repo"], rest)
                if op == "tree" and method == "GET":
                    revision, _, sub = rest.partition("/")
                    return self._tree(repo_type, match["repo"], revision, sub, query)
                if op == "paths-info" and method == "POST":
                    return self._paths_info(repo_type, match["repo"], rest)
                if op == "preupload" and method == "POST":
                    return self._preupload(repo_type, match["repo"], rest)
                if op == "commit" and method == "POST":
                    return self._commit_files(repo_type, match["repo"], rest)
            match = _RESOLVE.match(path)
            if match and method in ("GET", "HEAD"):
                repo_type = (match["type"] or "models")[:-1]
                return self._resolve(repo_type, match["repo"], match["rev"], match["path"], head)
            raise _HubError(404, f"No route for {method} {path}")

        def _whoami(self) -> None:
            if self._auth() is None:
                raise _HubError(401, "Invalid username or password.")
            self._send(
                200,
                {
                    "type": "user",
                    "id": "0" * 24,
                    "name": hub.user,
                    "fullname": "Test User",
                    "orgs": [],
                    "auth": {
                        "type": "access_token",
                        "accessToken": {"displayName": "tests", "role": "write"},
                    },
                },
            )

        def _create_repo(self) -> None:
            self._require_auth()
            payload = json.loads(self._body() or b"{}")
            repo_type = payload.get("type") or "model"
            if repo_type not in REPO_TYPES:
                raise _HubError(400, f"Invalid repo type {repo_type!r}")
            name = payload.get("name") or ""
            namespace = payload.get("organization") or hub.user
            if not re.fullmatch(r"[\w.-]{1,96}", name) or not re.fullmatch(
                r"[\w.-]{1,96}", namespace
            ):
                raise _HubError(400, f"Invalid repo name {namespace}/{name}")
            repo_id = f"{namespace}/{name}"
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            url = f"{hub.endpoint}/{prefix}{repo_id}"
            with hub._lock:
                if (repo_type, repo_id) in hub.repos:
                    return self._send(
                        409, {"error": "You already created this model repo", "url": url}
                    )
                private = payload.get("visibility", "public") != "public" or bool(
                    payload.get("private")
                )
                repo = Repo(repo_type, repo_id, private=private)
                # The Hub creates a repo with an initial commit holding .gitattributes.
                initial = Commit(
                    oid=_new_oid(repo_id, "initial"),
                    message="initial commit",
                    files={".gitattributes": GITATTRIBUTES},
                    parent=None,
                )
                repo.commits.append(initial)
                repo.branches["main"] = initial.oid
                hub.repos[(repo_type, repo_id)] = repo
            self._send(200, {"url": url, "name": repo_id, "id": _new_oid(repo_id, "id")[:24]})

        def _validate_yaml(self) -> None:
            payload = json.loads(self._body() or b"{}")
            content = payload.get("content", "")
            match = re.match(r"^\s*---\r?\n([\s\S]*?)\r?\n---(\r?\n|$)", content)
            errors = []
            if match:
                try:
                    metadata = yaml.safe_load(match.group(1))
                except yaml.YAMLError as error:
                    errors.append({"message": f"YAML error: {error}"})
                else:
                    if metadata is not None and not isinstance(metadata, dict):
                        errors.append({"message": "Metadata must be a mapping"})
                    elif metadata and "model-index" in metadata:
                        errors += _check_model_index(metadata["model-index"])
            status = 400 if errors else 200
            self._send(status, {"errors": errors, "warnings": []})

        def _repo_info(self, repo_type: str, repo_id: str, revision: str) -> None:
            repo = self._repo(repo_type, repo_id)
            commit = self._commit(repo, revision)
            card_data = _card_data(commit.files.get("README.md"))
            info = {
                "_id": _new_oid(repo_id, "id")[:24],
                "id": repo_id,
                "author": repo_id.split("/")[0],
                "sha": commit.oid,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "lastModified": _iso(commit.created_at),
                "createdAt": _iso(repo.commits[0].created_at),
                "tags": list((card_data or {}).get("tags") or []),
                "siblings": [{"rfilename": name} for name in sorted(commit.files)],
            }
            if card_data:
                info["cardData"] = card_data
                for key in ("library_name", "pipeline_tag"):
                    if key in card_data:
                        info[key] = card_data[key]
                if "model-index" in card_data:
                    info["model-index"] = card_data["model-index"]
            self._send(200, info, headers={"X-Repo-Commit": commit.oid})

        def _entries(self, commit: Commit, paths: list[str], recursive: bool) -> list[dict]:
            entries, folders = [], set()
            for name in sorted(commit.files):
                for prefix in paths:
                    if prefix and name != prefix and not name.startswith(prefix + "/"):
                        continue
                    remainder = name[len(prefix) + 1 :] if prefix else name
                    if name == prefix:
                        remainder = ""
                    if "/" in remainder and not recursive:
                        folder = (prefix + "/" if prefix else "") + remainder.split("/")[0]
                        folders.add(folder)
                        continue
                    if recursive:
                        parts = name.split("/")[:-1]
                        for i in range(len(prefix.split("/")) if prefix else 0, len(parts)):
                            folders.add("/".join(parts[: i + 1]))
                    entries.append(commit.entry(name))
                    break
            dirs = [{"type": "directory", "oid": "0" * 40, "size": 0, "path": f} for f in folders]
            return sorted(dirs, key=lambda d: d["path"]) + entries

        def _tree(self, repo_type: str, repo_id: str, revision: str, sub: str, query: dict) -> None:
            repo = self._repo(repo_type, repo_id)
            commit = self._commit(repo, revision)
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            sub = sub.strip("/")
            entries = self._entries(commit, [sub], recursive)
            if sub and not entries:
                raise _HubError(404, f"{sub} not found", code="EntryNotFound", commit=commit.oid)
            self._send(200, entries, headers={"X-Repo-Commit": commit.oid})

        def _paths_info(self, repo_type: str, repo_id: str, revision: str) -> None:
            repo = self._repo(repo_type, repo_id)
            commit = self._commit(repo, revision)
            body = self._body()
            if self.headers.get("Content-Type", "").startswith("application/json"):
                paths = json.loads(body or b"{}").get("paths", [])
            else:
                paths = parse_qs(body.decode()).get("paths", [])
            entries = []
            for path in paths:
                path = path.strip("/")
                if path in commit.files:
                    entries.append(commit.entry(path))
                elif any(name.startswith(path + "/") for name in commit.files):
                    entries.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": path})
            self._send(200, entries, headers={"X-Repo-Commit": commit.oid})

        def _preupload(self, repo_type: str, repo_id: str, revision: str) -> None:
            self._require_auth()
            repo = self._repo(repo_type, repo_id)
            commit = repo.resolve(unquote(revision))
            payload = json.loads(self._body() or b"{}")
            patterns = lfs_patterns(commit.files.get(".gitattributes") if commit else None)
            files = []
            for item in payload.get("files", []):
                path = item["path"]
                lfs = goes_to_lfs(path, int(item.get("size") or 0), patterns)
                oid = None
                if commit and path in commit.files:
                    # What the client compares with its own file to skip unchanged ones.
                    content = commit.files[path]
                    oid = commit.lfs.get(path) if lfs else git_blob_oid(content)
                files.append(
                    {
                        "path": path,
                        # "lfs": uploaded through the LFS batch API, named by sha256 in the
                        # commit; "regular": base64 inside the commit payload.
                        "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False,
                        "oid": oid,
                    }
                )
            self._send(200, {"files": files, "commitOid": commit.oid if commit else None})

        def _commit_files(self, repo_type: str, repo_id: str, revision: str) -> None:
            self._require_auth()
            revision = unquote(revision)
            body = self._body()
            with hub._lock:
                repo = self._repo(repo_type, repo_id)
                if revision not in repo.branches:
                    raise _HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
                head = repo.resolve(revision)
                files = dict(head.files) if head else {}
                lfs = dict(head.lfs) if head else {}
                summary = ""
                try:
                    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                except json.JSONDecodeError as error:
                    raise _HubError(400, f"Invalid NDJSON payload: {error}") from error
                for line in lines:
                    key, value = line.get("key"), line.get("value") or {}
                    if key == "header":
                        summary = value.get("summary") or ""
                        parent = value.get("parentCommit")
                        if parent and head and not head.oid.startswith(parent):
                            raise _HubError(412, "A commit has happened since. Please refresh")
                    elif key == "file":
                        if value.get("encoding", "base64") != "base64":
                            raise _HubError(400, "Only base64 file contents are supported")
                        files[value["path"]] = base64.b64decode(value["content"])
                        lfs.pop(value["path"], None)
                    elif key == "lfsFile":
                        files[value["path"]] = _uploaded_object(repo, value)
                        lfs[value["path"]] = value["oid"]
                    elif key == "deletedFile":
                        lfs.pop(value["path"], None)
                        if files.pop(value["path"], None) is None:
                            raise _HubError(404, f"{value['path']} not found", code="EntryNotFound")
                    elif key == "deletedFolder":
                        prefix = value["path"].rstrip("/") + "/"
                        for name in [n for n in files if n.startswith(prefix)]:
                            del files[name]
                            lfs.pop(name, None)
                    else:
                        raise _HubError(400, f"Unsupported commit operation {key!r}")
                if not summary:
                    raise _HubError(400, "Commit summary is required")
                commit = Commit(
                    oid=_new_oid(repo_id, f"{len(repo.commits)}:{summary}"),
                    message=summary,
                    files=files,
                    parent=head.oid if head else None,
                    lfs=lfs,
                )
                repo.commits.append(commit)
                repo.branches[revision] = commit.oid
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            self._send(
                200,
                {
                    "success": True,
                    "commitOid": commit.oid,
                    "commitUrl": f"{hub.endpoint}/{prefix}{repo_id}/commit/{commit.oid}",
                },
            )

        def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
            """The git-LFS batch API: where to upload each object not stored yet."""
            self._require_auth()
            repo = self._repo(repo_type, repo_id)
            payload = json.loads(self._body() or b"{}")
            if payload.get("operation") != "upload":
                raise _HubError(400, "Only the upload operation is supported")
            if "basic" not in (payload.get("transfers") or ["basic"]):
                raise _HubError(400, "Only the basic transfer is supported")
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            objects = []
            for item in payload.get("objects", []):
                oid, size = str(item["oid"]), int(item["size"])
                entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                if not re.fullmatch(r"[0-9a-f]{64}", oid):
                    entry["error"] = {"code": 422, "message": f"Invalid oid {oid!r}"}
                elif oid not in repo.lfs_objects:  # stored already: no actions, no upload
                    signature = hub.sign(repo_type, repo_id, oid)
                    where = f"{prefix}{repo_id}/{oid}"
                    entry["actions"] = {
                        "upload": {"href": f"{hub.storage}/__lfs/{where}?signature={signature}"},
                        "verify": {"href": f"{hub.endpoint}/__lfs/verify/{where}", "header": {}},
                    }
                objects.append(entry)
            data = json.dumps({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})
            self._send(
                200, raw=data.encode(), headers={"Content-Type": "application/vnd.git-lfs+json"}
            )

        def _lfs_object(self, method: str, match: re.Match, query: dict, head: bool) -> None:
            """The storage (signed URLs: upload, download) and the Hub's verify action."""
            repo_type = (match["type"] or "models")[:-1]
            repo_id, oid = match["repo"], match["oid"]
            repo = hub.repos.get((repo_type, repo_id))
            if repo is None:
                raise _HubError(404, "Repository not found", code="RepoNotFound")
            if match["verify"]:
                if method != "POST":
                    raise _HubError(405, f"{method} not allowed on the verify action")
                self._require_auth()
                stored = repo.lfs_objects.get(oid)
                size = json.loads(self._body() or b"{}").get("size")
                if stored is None or len(stored) != size:
                    raise _HubError(404, f"LFS object {oid} not found or of another size")
                return self._send(200, {"success": True})
            expected = hub.sign(repo_type, repo_id, oid)
            if not hmac.compare_digest(query.get("signature", [""])[0], expected):
                raise _HubError(403, "Request signature does not match")
            if method == "PUT":
                body = self._body()
                if sha256_hex(body) != oid:
                    raise _HubError(400, f"Uploaded content does not match sha256 {oid}")
                with hub._lock:
                    repo.lfs_objects[oid] = body
                return self._send(200, raw=b"", headers={"ETag": f'"{oid}"'})
            if method in ("GET", "HEAD"):
                content = repo.lfs_objects.get(oid)
                if content is None:
                    raise _HubError(404, "NoSuchKey")
                return self._send_content(content, {"ETag": f'"{oid}"'}, head)
            raise _HubError(405, f"{method} not allowed on storage")

        def _send_content(self, content: bytes, headers: dict[str, str], head: bool) -> None:
            """File content, honouring a `Range: bytes=a-b` request (resumed downloads)."""
            headers = {**headers, "Accept-Ranges": "bytes"}
            headers["Content-Type"] = "application/octet-stream"
            status = 200
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if match:
                start = int(match.group(1))
                end = int(match.group(2)) if match.group(2) else len(content) - 1
                headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
                content, status = content[start : end + 1], 206
            self._send(status, raw=content, headers=headers, head=head)

        def _resolve(
            self, repo_type: str, repo_id: str, revision: str, path: str, head: bool
        ) -> None:
            repo = self._repo(repo_type, repo_id)
            commit = self._commit(repo, revision)
            if path not in commit.files:
                raise _HubError(404, "Entry not found", code="EntryNotFound", commit=commit.oid)
            content = commit.files[path]
            if path in commit.lfs:
                # The Hub redirects an LFS file to its storage (a CDN: another origin), with
                # the file's sha256 and size on the redirect itself.
                oid = commit.lfs[path]
                prefix = "" if repo_type == "model" else f"{repo_type}s/"
                location = f"{hub.storage}/__lfs/{prefix}{repo_id}/{oid}"
                location += f"?signature={hub.sign(repo_type, repo_id, oid)}"
                headers = {
                    "X-Repo-Commit": commit.oid,
                    "X-Linked-Etag": f'"{oid}"',
                    "X-Linked-Size": str(len(content)),
                    "ETag": f'"{git_blob_oid(lfs_pointer(content))}"',
                    "Location": location,
                }
                return self._send(302, raw=b"", headers=headers, head=head)
            headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{git_blob_oid(content)}"'}
            self._send_content(content, headers, head)

    return Handler


def _uploaded_object(repo: Repo, value: dict[str, Any]) -> bytes:
    """The content an `lfsFile` commit entry names; it must have been uploaded (and match)."""
    if value.get("algo", "sha256") != "sha256":
        raise _HubError(400, f"Unsupported LFS hash algorithm {value.get('algo')!r}")
    content = repo.lfs_objects.get(str(value.get("oid")))
    if content is None:
        raise _HubError(
            422,
            f"Your push was rejected because an LFS pointer pointed to a file that does not "
            f"exist: {value.get('path')} ({value.get('oid')})",
        )
    if value.get("size") is not None and int(value["size"]) != len(content):
        raise _HubError(
            422, f"LFS object {value['oid']} has size {len(content)}, not {value['size']}"
        )
    return content


def _new_oid(*parts: str) -> str:
    return hashlib.sha1(f"{time.time_ns()}:{':'.join(parts)}".encode()).hexdigest()


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(timestamp))


def _card_data(readme: bytes | None) -> dict | None:
    if not readme:
        return None
    match = re.match(r"^\s*---\r?\n([\s\S]*?)\r?\n---(\r?\n|$)", readme.decode("utf-8", "replace"))
    if not match:
        return None
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def _check_model_index(model_index: Any) -> list[dict]:
    """The structural checks the Hub applies to `model-index` (name, results, task/dataset/metrics)."""
    errors = []
    if not isinstance(model_index, list) or not model_index:
        return [{"message": '"model-index" must be a non-empty array'}]
    for entry in model_index:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            errors.append({"message": '"model-index[].name" must be a string'})
            continue
        for result in entry.get("results") or []:
            task, dataset = result.get("task") or {}, result.get("dataset") or {}
            if not isinstance(task.get("type"), str):
                errors.append({"message": '"results[].task.type" must be a string'})
            if not isinstance(dataset.get("type"), str) or not isinstance(dataset.get("name"), str):
                errors.append({"message": '"results[].dataset.{type,name}" must be strings'})
            for metric in result.get("metrics") or []:
                if not isinstance(metric.get("type"), str) or "value" not in metric:
                    errors.append({"message": '"results[].metrics[]" needs type and value'})
    return errors


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", default=None, help="Accept only this token (default: any).")
    args = parser.parse_args()
    server = HubServer(token=args.token, port=args.port).start()
    print(f"Hub test server on {server.endpoint} (HF_ENDPOINT={server.endpoint})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
