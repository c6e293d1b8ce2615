"""A Hugging Face Hub on 127.0.0.1 for tests: the HTTP API that huggingface_hub and datasets call, so pushes and
reads go through the real clients end to end (`HfApi.create_repo/create_commit/create_tag/list_repo_files`,
`hf_hub_download`, `snapshot_download`, `datasets.load_dataset(..., streaming=True)` through `HfFileSystem`).

Served: repo creation, README metadata validation, preupload (every file "regular": its bytes travel inside the
commit, no LFS/Xet), ndjson commits with `parentCommit` checked like the Hub (412 when the branch moved), branches
and tags, repo info at a revision (branch, tag or commit sha), tree listings, paths-info, refs, commits, and file
downloads with HEAD and byte ranges. Errors carry the Hub's `X-Error-Code` headers, so the client raises its own
RepositoryNotFoundError / RevisionNotFoundError / EntryNotFoundError. Writes need a token, as on the Hub.

Repos live in memory as git-like snapshots (a commit is the full {path: bytes} of the repo, with a 40-hex id).
A process uses it with `HF_ENDPOINT=<url>` (`env()`); the test process itself with `point_at()`, which sets the
constants huggingface_hub and datasets read from the environment at import. Run alone for a manual session:

    python tests/helpers/local_hub.py --port 8765   # then HF_ENDPOINT=http://127.0.0.1:8765 HF_TOKEN=x python app.py
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

TOKEN = "hf_local_hub_test_token"
PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"  # what the Hub puts in a new repo, in short


def blob_oid(data: bytes) -> str:
    """git's blob id, which the Hub reports for regular files (and huggingface_hub compares with its own)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str | None
    files: dict[str, bytes]
    title: str
    date: str


@dataclass
class Repo:
    type: str
    id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def commit(self, parent: str | None, files: dict[str, bytes], title: str) -> Commit:
        digest = hashlib.sha1(json.dumps([parent, title, time.time_ns(), sorted((p, blob_oid(d)) for p, d in
                                                                                 files.items())]).encode())
        commit = Commit(digest.hexdigest(), parent, files, title, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")
        self.commits[commit.oid] = commit
        return commit

    def resolve(self, revision: str) -> Commit | None:
        """A branch, a tag (also as refs/heads/..., refs/tags/...) or a full commit id, as the Hub resolves them."""
        name = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        oid = self.branches.get(name) or self.tags.get(name) or (revision if revision in self.commits else None)
        return self.commits.get(oid) if oid else None


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


class LocalHub:
    """The server and its repos; `with LocalHub() as hub:` serves on a free port in a background thread."""

    def __init__(self, port: int = 0) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, for tests to look at
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LocalHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def env(self, cache: Path) -> dict[str, str]:
        """Environment of a process that talks to this Hub (online, logged in, its own cache)."""
        return {"HF_ENDPOINT": self.url, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
                "HF_HOME": str(cache), "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "0"}

    def point_at(self, monkeypatch: Any, cache: Path) -> None:
        """Point huggingface_hub and datasets in this process at the server (they read HF_ENDPOINT at import)."""
        import datasets.config
        import huggingface_hub.constants as constants
        import huggingface_hub.hf_api

        for name, value in self.env(cache).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(constants, "ENDPOINT", self.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", self.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache / "hub"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(cache / "token"))  # the token is HF_TOKEN, or none
        monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", self.url)
        monkeypatch.setattr(datasets.config, "HF_ENDPOINT", self.url)
        monkeypatch.setattr(datasets.config, "HUB_DATASETS_URL", self.url + "/datasets/{repo_id}/resolve/{revision}/{path}")
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache / "datasets")

    def repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "RepoNotFound", f"Repository not found: {repo_type} {repo_id}")
        return repo

    def at(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(unquote(revision))
        if commit is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {unquote(revision)}")
        return commit

    # -- the API, one method per route; each returns (status, headers, body)

    def create_repo(self, body: dict[str, Any]) -> Any:
        repo_type = body.get("type") or "model"
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else f"me/{body['name']}"
        if (repo_type, repo_id) in self.repos:
            raise HubError(409, None, "You already created this repo",  # the Hub also gives its url
                           url=f"{self.url}/{PREFIXES[repo_type]}{repo_id}")
        repo = Repo(repo_type, repo_id, body.get("visibility") == "private")
        repo.branches["main"] = repo.commit(None, {".gitattributes": GITATTRIBUTES}, "initial commit").oid
        self.repos[(repo_type, repo_id)] = repo
        return {"url": f"{self.url}/{PREFIXES[repo_type]}{repo_id}", "name": repo_id}

    def validate_yaml(self, body: dict[str, Any]) -> Any:
        content = str(body.get("content", ""))
        if content.startswith("---"):
            try:
                meta = yaml.safe_load(content.split("---", 2)[1])
            except yaml.YAMLError as err:
                raise HubError(400, None, f"invalid YAML: {err}") from err
            if meta is not None and not isinstance(meta, dict):
                raise HubError(400, None, "the metadata is not a mapping")
        return {"errors": [], "warnings": []}

    def info(self, repo: Repo, revision: str) -> Any:
        commit = self.at(repo, revision)
        card: Any = None
        if commit.files.get("README.md", b"").startswith(b"---"):
            card = yaml.safe_load(commit.files["README.md"].decode().split("---", 2)[1])
        return {"id": repo.id, "_id": repo.id, "author": repo.id.split("/")[0], "sha": commit.oid,
                "private": repo.private, "gated": False, "disabled": False, "lastModified": commit.date,
                "createdAt": repo.commits[next(iter(repo.commits))].date, "cardData": card,
                "tags": (card or {}).get("tags") or [], "siblings": [{"rfilename": p} for p in sorted(commit.files)]}

    def tree(self, repo: Repo, revision: str, folder: str, recursive: bool) -> Any:
        commit, folder = self.at(repo, revision), unquote(folder).strip("/")
        prefix = f"{folder}/" if folder else ""
        if folder and not any(p.startswith(prefix) for p in commit.files):
            raise HubError(404, "EntryNotFound", f"{folder} does not exist on {revision}")
        entries: dict[str, Any] = {}
        for path in sorted(commit.files):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix):].split("/")
            for depth in range(1, len(parts)):
                sub = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(sub, self.entry(commit, sub))
            if recursive or len(parts) == 1:
                entries[path] = self.entry(commit, path)
        return sorted(entries.values(), key=lambda e: (e["type"] != "directory", e["path"]))

    def entry(self, commit: Commit, path: str) -> dict[str, Any]:
        if path in commit.files:
            return {"type": "file", "path": path, "size": len(commit.files[path]), "oid": blob_oid(commit.files[path])}
        below = sorted((p, blob_oid(d)) for p, d in commit.files.items() if p.startswith(path + "/"))
        return {"type": "directory", "path": path, "oid": hashlib.sha1(json.dumps(below).encode()).hexdigest()}

    def paths_info(self, repo: Repo, revision: str, paths: list[str]) -> Any:
        commit = self.at(repo, revision)
        return [self.entry(commit, p.strip("/")) for p in paths
                if p.strip("/") in commit.files or any(f.startswith(p.strip("/") + "/") for f in commit.files)]

    def preupload(self, repo: Repo, revision: str, body: dict[str, Any]) -> Any:
        commit = self.at(repo, revision)
        return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                           "oid": blob_oid(commit.files[f["path"]]) if f["path"] in commit.files else None}
                          for f in body["files"]]}

    def commit(self, repo: Repo, revision: str, lines: list[dict[str, Any]]) -> Any:
        branch = unquote(revision)
        if branch not in repo.branches:
            raise HubError(404 if repo.resolve(branch) is None else 400, "RevisionNotFound",
                           f"can only commit to a branch, not {branch}")
        head = repo.commits[repo.branches[branch]]
        header = lines[0]["value"]
        if header.get("parentCommit") and header["parentCommit"] != head.oid:
            raise HubError(412, None, "A commit has happened since. Please refresh and try again.")
        files = dict(head.files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    raise HubError(404, "EntryNotFound", f"A file with this name doesn't exist: {value['path']}")
                del files[value["path"]]
            elif key == "deletedFolder":
                files = {p: d for p, d in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:  # lfsFile: this Hub never asked for LFS, so a client sending one did not follow preupload
                raise HubError(400, None, f"unexpected commit operation {key}")
        new = repo.commit(head.oid, files, header["summary"])
        repo.branches[branch] = new.oid
        return {"commitUrl": f"{self.url}/{PREFIXES[repo.type]}{repo.id}/commit/{new.oid}", "commitOid": new.oid,
                "pullRequestUrl": None}

    def create_ref(self, repo: Repo, kind: str, name: str, body: dict[str, Any]) -> Any:
        if kind == "tag":  # POST .../tag/<revision> {"tag": name}
            refs, name, target = repo.tags, body["tag"], self.at(repo, name).oid
        else:  # POST .../branch/<name> {"startingPoint": revision}
            refs, name = repo.branches, unquote(name)
            target = self.at(repo, body.get("startingPoint") or "main").oid
        if name in refs:
            raise HubError(409, None, f"{kind} {name} already exists")
        refs[name] = target
        return {}

    def refs(self, repo: Repo) -> Any:
        def listing(refs: dict[str, str], kind: str) -> list[dict[str, str]]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": oid} for n, oid in sorted(refs.items())]
        return {"branches": listing(repo.branches, "heads"), "tags": listing(repo.tags, "tags"), "converts": []}

    def commits(self, repo: Repo, revision: str) -> Any:
        out, commit = [], self.at(repo, revision)
        while commit is not None:
            out.append({"id": commit.oid, "title": commit.title, "message": "", "date": commit.date,
                        "authors": [{"user": "me"}]})
            commit = repo.commits.get(commit.parent) if commit.parent else None
        return out

    def route(self, method: str, path: str, query: dict[str, list[str]], body: bytes,
              headers: Any) -> tuple[int, dict[str, str], bytes]:
        """Dispatch a request; raises HubError for what the Hub answers with an error."""
        parts = path.strip("/").split("/")
        if method == "POST" and not headers.get("Authorization"):
            raise HubError(401, None, "Invalid username or password.")
        if parts[0] == "api":
            if parts[1:] == ["repos", "create"]:
                return _json(self.create_repo(json.loads(body)))
            if parts[1:] == ["validate-yaml"]:
                return _json(self.validate_yaml(json.loads(body)))
            if parts[1:] == ["whoami-v2"]:
                return _json({"type": "user", "name": "me", "auth": {"accessToken": {"role": "write"}}})
            repo_type = parts[1].removesuffix("s")
            repo, rest = self.repo(repo_type, "/".join(parts[2:4])), parts[4:]
            if not rest:
                return _json(self.info(repo, "main"))
            action, revision, tail = rest[0], rest[1] if len(rest) > 1 else "main", "/".join(rest[2:])
            if action == "revision":
                return _json(self.info(repo, revision))
            if action == "tree":
                return _json(self.tree(repo, revision, tail, query.get("recursive", ["False"])[0].lower() == "true"))
            if action == "paths-info":
                form = parse_qs(body.decode())
                return _json(self.paths_info(repo, revision, form.get("paths", [])))
            if action == "preupload":
                return _json(self.preupload(repo, revision, json.loads(body)))
            if action == "commit":
                return _json(self.commit(repo, revision, [json.loads(line) for line in body.splitlines() if line]))
            if action in ("tag", "branch"):
                return _json(self.create_ref(repo, action, revision, json.loads(body or b"{}")))
            if action == "refs":
                return _json(self.refs(repo))
            if action == "commits":
                return _json(self.commits(repo, revision))
            raise HubError(404, None, f"no route {method} {path}")
        repo_type = "dataset" if parts[0] == "datasets" else "space" if parts[0] == "spaces" else "model"
        parts = parts[1:] if repo_type != "model" else parts
        if len(parts) >= 5 and parts[2] == "resolve":
            return self.resolve_file(self.repo(repo_type, "/".join(parts[:2])), parts[3], "/".join(parts[4:]),
                                     headers.get("Range"))
        raise HubError(404, None, f"no route {method} {path}")

    def resolve_file(self, repo: Repo, revision: str, filename: str, byte_range: str | None) -> tuple[int, dict[str, str], bytes]:
        commit, filename = self.at(repo, revision), unquote(filename)
        if filename not in commit.files:
            raise HubError(404, "EntryNotFound", f"{filename} does not exist on {unquote(revision)}")
        data = commit.files[filename]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{blob_oid(data)}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if byte_range and byte_range.startswith("bytes="):
            start_text, _, end_text = byte_range[6:].partition("-")
            start = int(start_text) if start_text else max(len(data) - int(end_text), 0)
            end = min(int(end_text), len(data) - 1) if end_text and start_text else len(data) - 1
            if start >= len(data):
                raise HubError(416, None, "Range Not Satisfiable")
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return 206, headers, data[start : end + 1]
        return 200, headers, data


def _json(value: Any) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(value).encode()


def _handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every answer has a Content-Length

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read `requests` instead
            pass

        def handle_any(self, method: str) -> None:
            url = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hub.requests.append((method, url.path))
            try:
                with hub.lock:
                    status, headers, data = hub.route(method if method != "HEAD" else "GET", url.path,
                                                      parse_qs(url.query), body, self.headers)
            except HubError as err:
                status, data = err.status, json.dumps({"error": err.message, **err.extra}).encode()
                headers = {"Content-Type": "application/json", "X-Error-Message": err.message,
                           **({"X-Error-Code": err.code} if err.code else {})}
            except Exception as err:  # a bug here: answer it rather than hang the client
                status, headers, data = 500, {"X-Error-Message": repr(err)[:200]}, repr(err).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(data)

        def do_GET(self) -> None:
            self.handle_any("GET")

        def do_HEAD(self) -> None:
            self.handle_any("HEAD")

        def do_POST(self) -> None:
            self.handle_any("POST")

    return Handler


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A local stand-in for the Hugging Face Hub (in memory).")
    parser.add_argument("--port", type=int, default=8765)
    cli = parser.parse_args()
    with LocalHub(cli.port) as served:
        print(f"serving on {served.url}: export HF_ENDPOINT={served.url} HF_TOKEN={TOKEN} HF_HUB_OFFLINE=0", flush=True)
        served.thread.join()
