"""The HTTP client of a served model: a concurrency limit, retries with backoff, timeouts, an
on-disk answer cache, and one-line errors.

Every failure a person can act on is an :class:`EndpointError` (a
:class:`~dpo_harness.errors.HarnessError`: one line, a fix, exit 2): the connection refused, a
timeout, an HTTP error, an answer that is not JSON or not in the OpenAI format. Connection
errors, timeouts, 408, 429 and 5xx are retried with exponential backoff (a ``Retry-After``
header is honoured, up to a cap); other 4xx are not — asking again cannot change them.

Answers are cached under ``$DPO_HARNESS_CACHE/endpoint/`` (default ``~/.cache/dpo_harness``),
keyed on the endpoint, the model name, the served model's identity (its fingerprint: the same
name serving other weights is another key), the path and the whole request body — which holds
the prompt and every generation setting — so a re-run does not pay twice and a changed setting
never reads a stale answer. A cache that cannot be written costs speed, never correctness.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from dpo_harness.errors import HarnessError

__all__ = [
    "EndpointClient",
    "EndpointError",
    "HTTPStatusFailure",
    "api_key_from_env",
    "normalise_url",
]

_BACKOFF_S = 0.5  # first wait; doubles per retry
_BACKOFF_CAP_S = 8.0
_START_FIX = (
    "start the server (e.g. `transformers serve MODEL` or `vllm serve MODEL`) or correct --endpoint"
)
_FORMAT_FIX = "check that --endpoint is an OpenAI-compatible server (its root or its /v1 URL)"


class EndpointError(HarnessError):
    """A served model could not be asked, or answered something unusable (exit 2)."""


class HTTPStatusFailure(EndpointError):
    """The server answered an HTTP error status (kept for callers that probe capabilities)."""

    def __init__(self, cause: str, fix: str | None, status: int, detail: str) -> None:
        super().__init__(cause, fix)
        self.status = status
        self.detail = detail


def normalise_url(url: str) -> str:
    """The server's root: ``http://host:8000/v1/`` and ``http://host:8000`` are one endpoint."""
    url = url.strip().rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _detail(resp: Any) -> str:
    """The server's own words about an error, one line."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    text = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            text = err.get("message")
        elif isinstance(err, str):
            text = err
        text = text or body.get("detail") or body.get("message")
    if text is None:
        text = resp.text
    line = (str(text).strip().splitlines() or [""])[0]
    return line[:200] or resp.reason_phrase or "no detail"


class EndpointClient:
    """JSON over HTTP to one OpenAI-compatible server, for one model name.

    ``identity`` (set once the served model is identified) joins the cache key. ``counters``
    counts ``requests`` (sent over the network), ``cache_hits`` and ``retries``.
    """

    def __init__(
        self,
        url: str,
        model: str,
        *,
        timeout: float = 120.0,
        retries: int = 3,
        concurrency: int = 4,
        cache_dir: Path | None = None,
        api_key: str | None = None,
        transport: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import httpx2

        self.url = normalise_url(url)
        self.model = model
        self.timeout = timeout
        self.retries = retries
        self.concurrency = concurrency
        self.cache_dir = cache_dir
        self.identity = ""
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx2.Client(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            limits=httpx2.Limits(
                max_connections=concurrency, max_keepalive_connections=concurrency
            ),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    # ------------------------------------------------------------------ requests

    def get(self, path: str) -> dict[str, Any]:
        return self._request("GET", path, None)

    def post(self, path: str, body: dict[str, Any], *, cache: bool = True) -> dict[str, Any]:
        """POST ``body`` (JSON) and return the answer; from the cache when asked before."""
        key = self._cache_key(path, body) if cache and self.cache_dir is not None else None
        if key is not None:
            hit = self._cache_read(key)
            if hit is not None:
                self._count("cache_hits")
                return hit
        answer = self._request("POST", path, body)
        if key is not None:
            self._cache_write(key, answer)
        return answer

    def post_many(
        self,
        path: str,
        bodies: Sequence[dict[str, Any]],
        *,
        on_done: Callable[[int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """POST every body, at most ``concurrency`` in flight; answers in the order of ``bodies``.

        The first error stops the rest (requests not yet sent are cancelled) and is raised.
        """
        if not bodies:
            return []
        out: list[dict[str, Any] | None] = [None] * len(bodies)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures: dict[Future[dict[str, Any]], int] = {
                pool.submit(self.post, path, body): i for i, body in enumerate(bodies)
            }
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in done:
                    exc = fut.exception()
                    if exc is not None:
                        for other in pending:
                            other.cancel()
                        raise exc
                    out[futures[fut]] = fut.result()
                if on_done is not None:
                    on_done(len(done))
        return [a for a in out if a is not None]

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        import httpx2

        what = f"{method} {path}"
        failure: str = ""
        kind = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self._count("retries")
            wait_s = min(_BACKOFF_S * 2**attempt, _BACKOFF_CAP_S)
            try:
                self._count("requests")
                resp = self._http.request(method, path, json=body)
            except httpx2.ConnectError as exc:
                kind, failure = "connect", _reason(exc)
            except httpx2.TimeoutException:
                kind, failure = "timeout", ""
            except httpx2.TransportError as exc:  # the connection broke mid-answer
                kind, failure = "transport", _reason(exc)
            else:
                status = resp.status_code
                if status < 400:
                    return self._parse(resp, what)
                detail = _detail(resp)
                if status not in (408, 429) and status < 500:
                    raise _status_error(self, what, status, detail)
                kind, failure = "status", f"HTTP {status}: {detail}"
                retry_after = resp.headers.get("retry-after", "")
                if retry_after.isdigit():
                    wait_s = min(float(retry_after), _BACKOFF_CAP_S)
            if attempt < self.retries:
                self._sleep(wait_s)
        tries = self.retries + 1
        attempts = f"{tries} {'try' if tries == 1 else 'tries'}"
        if kind == "connect":
            raise EndpointError(
                f"cannot connect to the endpoint {self.url} ({failure}; {attempts})", _START_FIX
            )
        if kind == "timeout":
            raise EndpointError(
                f"the endpoint {self.url} did not answer {what} within {self.timeout:g} s "
                f"({attempts})",
                "raise --endpoint-timeout, lower --endpoint-concurrency, or check the server",
            )
        if kind == "transport":
            raise EndpointError(
                f"the connection to {self.url} broke during {what} ({failure}; {attempts})",
                "check the server's log (did it crash or restart?)",
            )
        raise EndpointError(
            f"the endpoint {self.url} failed {what} {attempts} ({failure})",
            "check the server's log for the error, or lower --endpoint-concurrency",
        )

    def _parse(self, resp: Any, what: str) -> dict[str, Any]:
        try:
            data = resp.json()
        except ValueError:
            start = resp.text.strip()[:80]
            raise EndpointError(
                f"the endpoint's answer to {what} is not JSON: {start!r}", _FORMAT_FIX
            ) from None
        if not isinstance(data, dict):
            raise EndpointError(
                f"the endpoint's answer to {what} is not a JSON object: {type(data).__name__}",
                _FORMAT_FIX,
            )
        return data

    # ------------------------------------------------------------------ cache

    def _cache_key(self, path: str, body: dict[str, Any]) -> str:
        blob = json.dumps(
            {
                "endpoint": self.url,
                "model": self.model,
                "identity": self.identity,
                "path": path,
                "body": body,
            },
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()

    def _cache_path(self, key: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / key[:2] / f"{key}.json"

    def _cache_read(self, key: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self._cache_path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _cache_write(self, key: str, answer: dict[str, Any]) -> None:
        from dpo_harness.files import atomic_write_text

        # A read-only or full cache costs speed, never correctness. One writer at a time:
        # atomic_write_text reads the process umask by setting it.
        with self._lock, contextlib.suppress(OSError, HarnessError):
            atomic_write_text(self._cache_path(key), json.dumps(answer, ensure_ascii=False))


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    if "refused" in text.lower():
        return "connection refused"
    return (text.splitlines() or [text])[0][:160]


def _status_error(client: EndpointClient, what: str, status: int, detail: str) -> HTTPStatusFailure:
    if status in (401, 403):
        fix = "set OPENAI_API_KEY to the server's API key"
    elif status == 404:
        fix = f"the server has no {what.split()[-1]}: {_FORMAT_FIX}"
    else:
        fix = f"check --model ({client.model!r}) and that the server supports this request"
    return HTTPStatusFailure(
        f"the endpoint {client.url} refused {what} (HTTP {status}: {detail})", fix, status, detail
    )


def api_key_from_env() -> str | None:
    """The server's API key, if the environment has one (never stored anywhere)."""
    return os.environ.get("DPO_HARNESS_ENDPOINT_API_KEY") or os.environ.get("OPENAI_API_KEY")
