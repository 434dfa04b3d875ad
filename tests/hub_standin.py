"""A local stand-in for the Hugging Face Hub and for official download URLs, for the tests of `lmm.prepare`.

A threaded HTTP server on 127.0.0.1 answering what huggingface_hub calls (found in its source, v2.4):
  GET  /api/{models,datasets}/<repo>[/revision/<rev>]     repo info (`siblings` with sizes, LFS sha256, `gated`)
  GET  /api/{models,datasets}/<repo>/tree/<rev>[/<path>]  the file listing (one page)
  HEAD/GET /[datasets/]<repo>/resolve/<rev>/<path>        a file: X-Repo-Commit, ETag, Content-Length, Range -> 206
and plain files under /files/<anything> (HEAD/GET, Range). Private repos answer 401 without a token, gated ones
401 (no token) or 403 (a token not granted) with X-Error-Code: GatedRepo on downloads, as the Hub does.
Every request is logged; `cut_once` makes the next GET of a path send half its body, then drop the connection.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".zip", ".tar", ".safetensors", ".bin", ".model", ".json.gz")


@dataclass
class Repo:
    repo_id: str
    repo_type: str  # "model" | "dataset"
    files: dict[str, bytes]
    auth: str = ""  # "" public | "private" (401 without a token) | "gated"
    allowed_tokens: tuple[str, ...] = ()
    commit: str = ""

    def __post_init__(self):
        if not self.commit:
            digest = hashlib.sha1()
            for name in sorted(self.files):
                digest.update(name.encode() + hashlib.sha1(self.files[name]).digest())
            self.commit = digest.hexdigest()

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES) or len(self.files[path]) > 4096

    def blob_id(self, path: str) -> str:
        data = self.files[path]
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def sha256(self, path: str) -> str:
        return hashlib.sha256(self.files[path]).hexdigest()

    def sibling(self, path: str) -> dict:
        out = {"rfilename": path, "size": len(self.files[path]), "blobId": self.blob_id(path)}
        if self.is_lfs(path):
            out["lfs"] = {"sha256": self.sha256(path), "size": len(self.files[path]), "pointerSize": 134}
        return out

    def tree_entry(self, path: str) -> dict:
        out = {"type": "file", "oid": self.blob_id(path), "size": len(self.files[path]), "path": path}
        if self.is_lfs(path):
            out["lfs"] = {"oid": self.sha256(path), "size": len(self.files[path]), "pointerSize": 134}
        return out


@dataclass
class StandIn:
    repos: dict[tuple[str, str], Repo] = field(default_factory=dict)
    urls: dict[str, bytes] = field(default_factory=dict)
    log: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, Range header)
    cut_once: set[str] = field(default_factory=set)
    server: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add_repo(self, repo: Repo) -> Repo:
        self.repos[(repo.repo_type, repo.repo_id)] = repo
        return repo

    def add_url(self, path: str, data: bytes) -> str:
        """Serve `data` at /files/<path>; returns its full URL."""
        self.urls[path] = data
        return f"{self.base}/files/{path}"

    def requests(self, method: str | None = None) -> list[tuple[str, str, str]]:
        return [r for r in self.log if method is None or r[0] == method]

    def downloads(self) -> list[tuple[str, str, str]]:
        """GET requests for file contents (resolve or /files), not API calls."""
        return [r for r in self.log if r[0] == "GET" and ("/resolve/" in r[1] or r[1].startswith("/files/"))]

    def start(self) -> StandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                standin._handle(self, head=True)

            def do_GET(self):
                standin._handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    # ------------------------------------------------------------------------------------------- request handling
    def _send(self, h, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        h.send_response(status)
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head and body:
            h.wfile.write(body)

    def _json(self, h, obj, head: bool) -> None:
        self._send(h, 200, json.dumps(obj).encode(), {"Content-Type": "application/json"}, head)

    def _error(self, h, status: int, code: str, message: str, head: bool) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(h, status, body, {"X-Error-Code": code, "X-Error-Message": message,
                                     "Content-Type": "application/json"}, head)

    def _token(self, h) -> str | None:
        auth = h.headers.get("Authorization", "")
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else None

    def _repo(self, repo_type: str, repo_id: str) -> Repo | None:
        return self.repos.get((repo_type, repo_id))

    def _handle(self, h, head: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        self.log.append(("HEAD" if head else "GET", path, h.headers.get("Range", "")))
        parts = path.strip("/").split("/")
        if parts[0] == "files":
            name = "/".join(parts[1:])
            if name not in self.urls:
                return self._send(h, 404, b"not found", head=head)
            return self._serve_bytes(h, path, self.urls[name], {}, head)
        if parts[0] == "api" and len(parts) >= 4 and parts[1] in ("models", "datasets"):
            repo = self._repo(parts[1][:-1], f"{parts[2]}/{parts[3]}")
            if repo is None:
                return self._error(h, 401, "RepoNotFound", "Repository not found", head)
            if repo.auth == "private" and self._token(h) not in repo.allowed_tokens:
                return self._error(h, 401, "RepoNotFound", "Invalid username or password.", head)
            rest = parts[4:]
            if rest[:1] == ["tree"]:
                return self._json(h, [repo.tree_entry(p) for p in sorted(repo.files)], head)
            info = {"id": repo.repo_id, "sha": repo.commit, "private": repo.auth == "private",
                    "gated": "manual" if repo.auth == "gated" else False,
                    "siblings": [repo.sibling(p) for p in sorted(repo.files)]}
            return self._json(h, info, head)
        # /[datasets/]<owner>/<name>/resolve/<rev>/<path>
        repo_type = "model"
        if parts[0] == "datasets":
            repo_type, parts = "dataset", parts[1:]
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self._repo(repo_type, f"{parts[0]}/{parts[1]}")
            file = "/".join(parts[4:])
            if repo is None:
                return self._error(h, 401, "RepoNotFound", "Repository not found", head)
            token = self._token(h)
            if repo.auth == "private" and token not in repo.allowed_tokens:
                return self._error(h, 401, "RepoNotFound", "Invalid username or password.", head)
            if repo.auth == "gated" and token not in repo.allowed_tokens:
                if token is None:
                    return self._error(h, 401, "GatedRepo", f"Access to model {repo.repo_id} is restricted. You "
                                       "must have access to it and be authenticated to access it.", head)
                return self._error(h, 403, "GatedRepo", f"Access to model {repo.repo_id} is restricted and you are "
                                   "not in the authorized list.", head)
            if file not in repo.files:
                return self._error(h, 404, "EntryNotFound", f"{file} does not exist", head)
            etag = repo.sha256(file) if repo.is_lfs(file) else repo.blob_id(file)
            headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{etag}"'}
            return self._serve_bytes(h, path, repo.files[file], headers, head)
        return self._send(h, 404, b"not found", head=head)

    def _serve_bytes(self, h, path: str, data: bytes, headers: dict, head: bool) -> None:
        headers = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        start = 0
        status = 200
        rng = h.headers.get("Range", "")
        if rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes="):-1])
            if start >= len(data):
                headers["Content-Range"] = f"bytes */{len(data)}"
                return self._send(h, 416, b"", headers, head)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        if not head and path in self.cut_once and status == 200:
            self.cut_once.discard(path)
            h.send_response(200)
            for key, value in headers.items():
                h.send_header(key, value)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(h, status, body, headers, head)
