"""Call an OpenAI-compatible chat-completions judge with a disk cache, retries and bounded concurrency."""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lmm.atomic import write_text_atomic

log = logging.getLogger(__name__)

# Judge models pinned as in the papers whose numbers we compare against.
DEFAULT_JUDGE_MODELS = {
    "llava_bench": "gpt-4-0314",
    "mmvet": "gpt-4-0613",
}

RETRYABLE_STATUS = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class JudgeRequest:
    """One chat-completions call; `tag` labels it for the caller (a question id, say), not the cache."""

    messages: Sequence[Mapping[str, str]]
    temperature: float = 0.0
    max_tokens: int = 1024
    model: str | None = None  # None: the client's model
    params: Mapping[str, object] = field(default_factory=dict)  # further body fields, e.g. top_p, seed
    tag: object = None
    # Repeated judge runs of one item (LLaVA-Bench averages 3) need distinct cache entries; not sent.
    run: int = 0
    # Whether a reply is usable (e.g. parses as a score). A refused reply is returned with `rejected` set
    # but never cached, and a cached reply it refuses is asked again: a re-run re-asks only those items.
    accept: Callable[[str], bool] | None = field(default=None, compare=False)


@dataclass
class JudgeResult:
    content: str | None
    tag: object = None
    cached: bool = False
    parse_failure: bool = False  # the server answered, but not with a usable chat completion
    error: str | None = None  # why there is no content; None on success
    rejected: bool = False  # a chat completion arrived, but the request's `accept` refused it (not cached)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class JudgeBatch:
    results: list[JudgeResult]

    @property
    def parse_failures(self) -> int:
        return sum(r.parse_failure for r in self.results)

    @property
    def errors(self) -> int:
        return sum(not r.ok for r in self.results)

    @property
    def rejected(self) -> int:
        return sum(r.rejected for r in self.results)

    @property
    def cache_hits(self) -> int:
        return sum(r.cached for r in self.results)

    def write_jsonl(self, path: str | Path) -> None:
        """Save the replies (content, tag, status) one JSON object a line; no request headers are kept."""
        rows = [
            {
                "tag": r.tag,
                "content": r.content,
                "cached": r.cached,
                "parse_failure": r.parse_failure,
                "error": r.error,
                "rejected": r.rejected,
            }
            for r in self.results
        ]
        write_text_atomic(Path(path), "".join(json.dumps(row, default=str) + "\n" for row in rows))


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def extract_content(body: bytes) -> str | None:
    """The first choice's message text of a chat-completions reply, or None when the reply is not one."""
    try:
        data = json.loads(body)
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


class JudgeClient:
    """A chat-completions client for any OpenAI-compatible server (OpenAI, vLLM, ...).

    The API key is read from the environment variable named `api_key_env` at each call; it is only ever put
    in the Authorization header, never in the cache, results or error messages.
    """

    def __init__(
        self,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str = "OPENAI_API_KEY",
        cache_dir: str | Path | None = None,
        max_retries: int = 6,
        backoff_base: float = 1.0,
        backoff_max: float = 120.0,
        timeout: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.timeout = timeout
        self._sleep = sleep

    # -- cache -----------------------------------------------------------------------------------------------

    def _body(self, request: JudgeRequest) -> dict:
        body = {
            "model": request.model or self.model,
            "messages": [dict(m) for m in request.messages],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        body.update(request.params)
        return body

    @staticmethod
    def cache_key(body: Mapping, run: int = 0) -> str:
        """sha256 of the request body: model, messages and sampling parameters (no URL, no credentials)."""
        keyed = dict(body) if run == 0 else {**body, "__run__": run}
        canonical = json.dumps(keyed, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return self.cache_dir / f"{key}.json" if self.cache_dir is not None else None

    def _cache_get(self, key: str) -> str | None:
        path = self._cache_path(key)
        if path is None or not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))["content"]
        except (ValueError, KeyError, OSError):
            return None  # a damaged entry is a miss; the next success overwrites it

    def _cache_put(self, key: str, body: Mapping, content: str) -> None:
        path = self._cache_path(key)
        if path is not None:
            write_text_atomic(path, json.dumps({"request": body, "content": content}, ensure_ascii=False))

    # -- HTTP ------------------------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        key = os.environ.get(self.api_key_env)
        return text.replace(key, "***") if key else text

    def _post_once(self, body: Mapping) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(
            f"{self.base_url}/chat/completions", data=json.dumps(body).encode("utf-8"), headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            payload = e.read()
            if e.code in RETRYABLE_STATUS:
                raise _Retryable(f"HTTP {e.code}", parse_retry_after(e.headers.get("Retry-After"))) from None
            return e.code, payload
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
            raise _Retryable(f"connection error: {type(e).__name__}") from None

    def _post(self, body: Mapping) -> tuple[int, bytes]:
        """POST, retrying 429/5xx/connection errors after Retry-After if given, else exponential backoff."""
        for attempt in range(self.max_retries + 1):
            try:
                return self._post_once(body)
            except _Retryable as e:
                if attempt == self.max_retries:
                    raise
                delay = e.retry_after if e.retry_after is not None else self.backoff_base * 2**attempt
                delay = min(delay, self.backoff_max)
                log.warning("judge call failed (%s); retry %d in %.1fs", e, attempt + 1, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")

    # -- public ----------------------------------------------------------------------------------------------

    def complete(self, request: JudgeRequest) -> JudgeResult:
        """One judge call; never raises for server-side trouble, the result says what went wrong."""
        body = self._body(request)
        key = self.cache_key(body, request.run)
        cached = self._cache_get(key)
        if cached is not None:
            if request.accept is None or request.accept(cached):
                return JudgeResult(content=cached, tag=request.tag, cached=True)
            log.info("judge cache entry %s is not a usable reply: asking again", key[:12])
        try:
            status, payload = self._post(body)
        except _Retryable as e:
            return JudgeResult(None, tag=request.tag, error=f"gave up after {self.max_retries} retries: {e}")
        if status != 200:
            detail = self._scrub(payload[:300].decode("utf-8", "replace"))
            return JudgeResult(None, tag=request.tag, error=f"HTTP {status}: {detail}")
        content = extract_content(payload)
        if content is None:
            # Not cached: a later run should ask again.
            return JudgeResult(None, tag=request.tag, parse_failure=True, error="unparseable judge reply")
        if request.accept is not None and not request.accept(content):
            return JudgeResult(content=content, tag=request.tag, rejected=True)  # kept out of the cache
        self._cache_put(key, body, content)
        return JudgeResult(content=content, tag=request.tag)

    def judge_many(self, requests: Sequence[JudgeRequest], max_workers: int = 8) -> JudgeBatch:
        """All requests with at most `max_workers` in flight; results in request order."""

        def safe(request: JudgeRequest) -> JudgeResult:
            try:
                return self.complete(request)
            except Exception as e:  # noqa: BLE001 -- one bad item must not sink a batch of hundreds
                return JudgeResult(None, tag=request.tag, error=self._scrub(f"{type(e).__name__}: {e}"))

        with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
            results = list(pool.map(safe, requests))
        batch = JudgeBatch(results)
        if batch.errors:
            log.warning(
                "%d of %d judge calls failed (%d unparseable replies)",
                batch.errors,
                len(results),
                batch.parse_failures,
            )
        if batch.rejected:
            log.warning("%d of %d judge replies were not usable (not cached: a re-run asks again)",
                        batch.rejected, len(results))
        return batch

    def call_text(
        self, messages: Sequence[Mapping[str, str]], temperature: float, max_tokens: int, run: int = 0
    ) -> str | None:
        """One call returning only the reply text (None on failure).

        The shape MM-Vet's retry rule wants, e.g. `lambda m, t: client.call_text(m, t, max_tokens=3)`.
        """
        request = JudgeRequest(messages=messages, temperature=temperature, max_tokens=max_tokens, run=run)
        return self.complete(request).content
