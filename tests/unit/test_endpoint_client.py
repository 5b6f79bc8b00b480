"""The served-model client and the endpoint backend's pure parts, against a local stub transport.

The stub stands in for the network only where a real server cannot be made to fail on cue
(retries, backoff, timeouts, the concurrency limit, the cache); the end-to-end behaviour is
tested against a real ``transformers serve`` in tests/integration/test_endpoint_serve.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from dpo_harness.errors import BadInputError
from dpo_harness.evaluation.backends.client import (
    EndpointClient,
    EndpointError,
    HTTPStatusFailure,
    normalise_url,
)
from dpo_harness.evaluation.backends.endpoint import _prompt_logprobs, chat_messages
from dpo_harness.schema import ChatMessage
from dpo_harness.settings import eval_overrides


def _client(handler: Any, sleeps: list[float] | None = None, **kw: Any) -> EndpointClient:
    return EndpointClient(
        "http://stub:8000/v1/",
        "m",
        transport=httpx2.MockTransport(handler),
        sleep=(sleeps.append if sleeps is not None else (lambda _s: None)),
        **kw,
    )


def test_urls_with_and_without_v1_are_one_endpoint() -> None:
    assert normalise_url("http://h:8000/v1/") == normalise_url("http://h:8000") == "http://h:8000"


def test_server_errors_are_retried_with_exponential_backoff() -> None:
    calls: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(1)
        if len(calls) < 3:
            return httpx2.Response(503, json={"error": {"message": "busy"}})
        return httpx2.Response(200, json={"ok": True})

    sleeps: list[float] = []
    client = _client(handler, sleeps, retries=3)
    assert client.post("/v1/completions", {"prompt": "x"}) == {"ok": True}
    assert len(calls) == 3
    assert sleeps == [0.5, 1.0]
    assert client.counters["retries"] == 2


def test_retry_after_is_honoured_up_to_a_cap() -> None:
    calls: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx2.Response(429, headers={"retry-after": "3"}, json={})
        if len(calls) == 2:
            return httpx2.Response(429, headers={"retry-after": "600"}, json={})
        return httpx2.Response(200, json={})

    sleeps: list[float] = []
    _client(handler, sleeps, retries=3).post("/p", {})
    assert sleeps == [3.0, 8.0]


def test_a_client_error_is_not_retried_and_names_the_server_detail() -> None:
    calls: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(1)
        return httpx2.Response(400, json={"detail": "prompt must be a string."})

    with pytest.raises(HTTPStatusFailure) as info:
        _client(handler, retries=3).post("/v1/completions", {"prompt": [1, 2]})
    assert len(calls) == 1
    assert info.value.status == 400
    assert "prompt must be a string." in info.value.render()


def test_persistent_failures_end_in_one_line_errors() -> None:
    def refused(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)

    def slow(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("timed out", request=request)

    def broken(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(500, text="Internal Server Error")

    sleeps: list[float] = []
    with pytest.raises(EndpointError, match=r"cannot connect .*connection refused; 3 tries"):
        _client(refused, sleeps, retries=2).get("/v1/models")
    assert sleeps == [0.5, 1.0]
    with pytest.raises(EndpointError, match=r"did not answer POST /p within 5 s \(1 try\)"):
        _client(slow, retries=0, timeout=5).post("/p", {})
    with pytest.raises(EndpointError, match=r"failed POST /p 2 tries \(HTTP 500"):
        _client(broken, retries=1).post("/p", {})


def test_an_answer_that_is_not_json_is_named() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, text="<html>hello</html>")

    with pytest.raises(EndpointError, match="is not JSON"):
        _client(handler).post("/p", {})


def test_cache_answers_a_repeated_request_and_keys_on_body_and_identity(tmp_path: Path) -> None:
    seen: list[bytes] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.content)
        return httpx2.Response(200, json={"n": len(seen)})

    client = _client(handler, cache_dir=tmp_path)
    client.identity = "sha256:a"
    first = client.post("/p", {"prompt": "x", "max_tokens": 8})
    assert client.post("/p", {"max_tokens": 8, "prompt": "x"}) == first  # same body, any order
    assert len(seen) == 1 and client.counters["cache_hits"] == 1
    client.post("/p", {"prompt": "x", "max_tokens": 9})  # another setting: asked again
    client.identity = "sha256:b"  # other weights behind the same name: asked again
    client.post("/p", {"prompt": "x", "max_tokens": 8})
    client.post("/p", {"prompt": "x", "max_tokens": 8}, cache=False)
    assert len(seen) == 4
    # A new client (a re-run) reads the same cache.
    again = _client(handler, cache_dir=tmp_path)
    again.identity = "sha256:a"
    assert again.post("/p", {"prompt": "x", "max_tokens": 8}) == first
    assert len(seen) == 4


def test_post_many_keeps_order_and_the_concurrency_limit() -> None:
    lock = threading.Lock()
    in_flight = [0, 0]  # now, max

    def handler(request: httpx2.Request) -> httpx2.Response:
        import json

        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight[1], in_flight[0])
        time.sleep(0.02)
        with lock:
            in_flight[0] -= 1
        return httpx2.Response(200, json={"echo": json.loads(request.content)["i"]})

    client = _client(handler, concurrency=3)
    done: list[int] = []
    answers = client.post_many("/p", [{"i": i} for i in range(12)], on_done=done.append)
    assert [a["echo"] for a in answers] == list(range(12))
    assert 1 < in_flight[1] <= 3
    assert sum(done) == 12


def test_post_many_raises_the_first_error() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(404, json={"detail": "Not Found"})

    with pytest.raises(HTTPStatusFailure, match="HTTP 404"):
        _client(handler).post_many("/v1/completions", [{"i": i} for i in range(5)])


def test_prompt_logprobs_are_read_from_an_echoed_completion() -> None:
    data = {
        "choices": [
            {
                "text": "abc",
                "logprobs": {
                    "tokens": ["a", "b", "c"],
                    "token_logprobs": [None, -0.5, -2.0],
                    "top_logprobs": [None, {"b": -0.5}, {"x": -0.1, "c": -2.0}],
                },
            }
        ]
    }
    assert _prompt_logprobs(data, 3) == ([0.0, -0.5, -2.0], [True, True, False])
    # transformers serve answers without them: nothing to read.
    assert _prompt_logprobs({"choices": [{"text": "の指標"}]}, 3) is None
    assert _prompt_logprobs(data, 4) is None  # fewer positions than prompt tokens


def test_chat_messages_render_as_the_in_process_prompt() -> None:
    from dpo_harness.evaluation import measure
    from dpo_harness.evaluation.loading import load_tokenizer

    tok = load_tokenizer("demo")
    prompt = (ChatMessage(role="user", content="CTRとは何ですか？"),)
    for system in (None, "あなたは広告の専門家です。"):
        rendered = tok.apply_chat_template(
            chat_messages(prompt, system), tokenize=False, add_generation_prompt=True
        )
        assert rendered == measure.render_prompt(tok, prompt, system)


def test_endpoint_options_are_checked_together() -> None:
    with pytest.raises(BadInputError, match="no --endpoint"):
        eval_overrides({"endpoint_model": "m"})
    with pytest.raises(BadInputError, match="--endpoint needs --model"):
        eval_overrides({"endpoint": "http://localhost:8000"})
    out = eval_overrides({"endpoint": "http://localhost:8000/v1", "endpoint_model": "m"})
    assert out["endpoint"] == {"url": "http://localhost:8000/v1", "model": "m"}


def test_baseline_commands_refuse_a_served_model_and_keep_their_model_argument() -> None:
    import warnings

    from click.testing import CliRunner
    from dpo_harness.cli import cli

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # click warns when --model and MODEL share a name
        result = CliRunner().invoke(cli, ["baseline", "create", "--model", "x"])
    assert result.exit_code == 2, result.output
    assert "a baseline is the in-process evaluation of a base model" in result.output
