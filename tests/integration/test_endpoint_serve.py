"""``evaluate --endpoint`` against a real server: ``transformers serve`` with the demo model.

The test starts the server on a free localhost port (offline, CPU, float32 like the in-process
evaluation), evaluates a few AdTech items through it, and compares with the same items evaluated
in process: the greedy answers must be identical, and what the server cannot compute (weights,
logits, parity, prompt log-probabilities: transformers serve ignores ``echo``/``logprobs``) must
be skipped with the reason. Needs the ``serve`` extra (FastAPI, Uvicorn); skipped, saying so,
without it. Bounded: the server gets 120 s to come up, each request 120 s, the test kills it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from dpo_harness.cli import cli
from dpo_harness.files import load_model_file
from dpo_harness.schema import EvalReport

pytestmark = [pytest.mark.model, pytest.mark.slow]

STARTUP_S = 120.0
MODEL = "demo-served"

ITEMS = [
    {
        "id": "m1",
        "type": "multiple_choice",
        "question": "CTRの分母は何ですか。",
        "choices": ["表示回数", "クリック数"],
        "answer": 0,
    },
    {
        "id": "s1",
        "type": "short_answer",
        "question": "CTRとは何の略ですか。",
        "accepted": ["Click Through Rate", "クリック率"],
    },
    {
        "id": "n1",
        "type": "numeric",
        "question": "1000回表示で10回クリックならCTRは何%ですか。",
        "answer": 1.0,
        "unit": "%",
    },
    {
        "id": "n2",
        "type": "numeric",
        "question": "広告費が10万円でクリック数が500回のとき、CPCはいくらですか。",
        "answer": 200,
        "unit": "円",
    },
]


def _missing_serve_deps() -> str | None:
    missing = [m for m in ("fastapi", "uvicorn", "openai") if importlib.util.find_spec(m) is None]
    if missing:
        return (
            f"transformers serve needs {', '.join(missing)}: install the serve extra "
            "(pip install -c constraints.txt -e '.[serve]')"
        )
    if shutil.which("transformers", path=str(Path(sys.executable).parent)) is None:
        return "no `transformers` command next to this Python"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served_demo(
    tmp_path_factory: pytest.TempPathFactory, demo_dir: Path
) -> Iterator[tuple[str, Path]]:
    """(URL, log file) of ``transformers serve`` serving the demo model as ``MODEL``."""
    import httpx2

    why = _missing_serve_deps()
    if why is not None:
        pytest.skip(why)
    # The server lists a local model by the path it was given: serve it under a plain name.
    root = tmp_path_factory.mktemp("serve")
    (root / MODEL).symlink_to(demo_dir, target_is_directory=True)
    port = _free_port()
    log = root / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    exe = str(Path(sys.executable).parent / "transformers")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(exe, "serve", MODEL, "--host", "127.0.0.1", "--port", str(port)),
                *("--device", "cpu", "--dtype", "float32"),
            ],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"transformers serve exited ({proc.returncode}): {log.read_text()[-800:]}"
                )
            try:
                if httpx2.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"transformers serve not up within {STARTUP_S:g} s: {log.read_text()[-800:]}"
                )
            time.sleep(0.5)
        yield url, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def _evaluate(args: list[str], out: Path, data: Path) -> EvalReport:
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            *args,
            "--suites",
            "numerical,adtech",
            "--suite-data",
            f"adtech={data}",
            "--max-new-tokens",
            "48",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    return load_model_file(out / "report.json", EvalReport)


def test_served_demo_model_answers_as_in_process_and_skips_what_it_cannot(
    served_demo: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _log = served_demo
    monkeypatch.setenv("DPO_HARNESS_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ITEMS), "utf-8")
    # --endpoint-tokenizer: the served name is not a directory here.
    served_args = ["--endpoint", f"{url}/v1", "--model", MODEL, "--endpoint-tokenizer", "demo"]
    served_args += ["--endpoint-timeout", "120", "--endpoint-retries", "1"]

    t0 = time.perf_counter()
    served = _evaluate(served_args, tmp_path / "served", data)
    first_s = time.perf_counter() - t0
    local = _evaluate([], tmp_path / "local", data)

    # The same greedy answers, item by item.
    answers = {
        s.item_id: s.response for s in served.suite("adtech").samples if s.response is not None
    }
    expected = {
        s.item_id: s.response
        for s in local.suite("adtech").samples
        if s.item_id in ("s1", "n1", "n2")
    }
    assert answers == expected
    for name in ("short_answer_accuracy", "numeric_accuracy"):
        assert served.suite("adtech").metric(name).value == local.suite("adtech").metric(name).value

    # The served model is identified, its template checked against the local tokenizer's.
    model = served.provenance.model
    assert model.kind.value == "served" and model.n_parameters is None
    assert model.chat_template_hash == local.provenance.model.chat_template_hash is not None

    # What it cannot compute is skipped, with the reason.
    skipped = served.suite("adtech").skipped
    no_lp = "this server returns no prompt log-probabilities"
    for name in ("mc_accuracy", "mc_accuracy_bytes", "mc_gold_margin", "overall_accuracy"):
        assert no_lp in skipped[name], (name, skipped)
    numerical = served.suite("numerical")
    assert numerical.metrics == []
    assert "weights cannot be read over the API" in numerical.skipped["nonfinite_parameters"]
    assert "no full next-token distributions" in numerical.skipped["probe_entropy"]
    assert no_lp in numerical.skipped["heldout_bits_per_byte"]
    assert "in-process check" in numerical.skipped["parity_mismatch_share"]
    stats = served.provenance.runner_stats
    assert stats["endpoint.requests"] == 3 and stats.get("endpoint.cache_hits", 0) == 0

    # A re-run pays nothing for the answers: all from the cache.
    t0 = time.perf_counter()
    again = _evaluate(served_args, tmp_path / "again", data)
    second_s = time.perf_counter() - t0
    assert again.provenance.runner_stats.get("endpoint.requests", 0) == 0
    assert again.provenance.runner_stats["endpoint.cache_hits"] == 3
    assert {s.item_id: s.response for s in again.suite("adtech").samples} == {
        s.item_id: s.response for s in served.suite("adtech").samples
    }
    print(f"served evaluation {first_s:.1f} s, re-run from the cache {second_s:.1f} s")


def test_served_demo_model_is_gated_against_the_in_process_baseline(
    served_demo: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _log = served_demo
    monkeypatch.setenv("DPO_HARNESS_CACHE", str(tmp_path / "cache"))
    # The gate pairs at least 10 items per metric: 10 short-answer and 10 numeric items of the
    # built-in AdTech data (and one multiple-choice item, which the server cannot score).
    from dpo_harness.suites.adtech import AdtechSuite

    items = AdtechSuite().path.read_text("utf-8").splitlines()
    rows = [json.loads(line) for line in items if line.strip()]
    picked = [
        *[r for r in rows if r["type"] == "multiple_choice"][:1],
        *[r for r in rows if r["type"] == "short_answer"][:10],
        *[r for r in rows if r["type"] == "numeric"][:10],
    ]
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in picked), "utf-8")
    same = ["--suite-data", f"adtech={data}", "--max-new-tokens", "16"]
    baselines = tmp_path / "baselines"
    created = CliRunner().invoke(
        cli,
        [
            *("baseline", "create", "demo", "--suites", "numerical,adtech"),
            *same,
            *("--baselines-dir", str(baselines), "--quiet"),
        ],
    )
    assert created.exit_code == 0, created.output
    out = tmp_path / "gate"
    result = CliRunner().invoke(
        cli,
        [
            *("gate", "--endpoint", url, "--model", MODEL, "--endpoint-tokenizer", "demo"),
            *("--base", "demo", "--baselines-dir", str(baselines), "--out", str(out)),
            *same,
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "PROMOTE" in result.output
    decision = json.loads((out / "decision.json").read_text("utf-8"))
    verdicts = {f"{v['suite']}::{v['metric']}": v for v in decision["verdicts"]}
    for name in ("adtech::short_answer_accuracy", "adtech::numeric_accuracy"):
        assert verdicts[name]["verdict"] in ("pass", "reported"), verdicts[name]
    mc = verdicts["adtech::mc_accuracy"]
    assert mc["verdict"] == "skipped"
    assert "this server returns no prompt log-probabilities" in mc["reason"]
    weights = verdicts["numerical::nonfinite_parameters"]
    assert weights["verdict"] == "skipped" and "over the API" in weights["reason"]


def test_plain_text_prompts_are_continued_as_in_process(
    served_demo: tuple[str, Path],
    demo_loaded: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plain-text prompt (an lm-eval generate_until task) goes to /v1/completions as it stands."""
    from dpo_harness.evaluation.backends.endpoint import connect
    from dpo_harness.evaluation.runner import ModelRunner
    from dpo_harness.schema import EvalConfig, GenerateRequest

    url, _log = served_demo
    monkeypatch.setenv("DPO_HARNESS_CACHE", str(tmp_path / "cache"))
    config = EvalConfig.model_validate(
        {"endpoint": {"url": url, "model": MODEL, "tokenizer": "demo", "retries": 1}}
    )
    texts = ["CTRとは", "質問: 日本の首都はどこですか？\n答え:", "リスティング広告の"]
    reqs = [GenerateRequest(prompt=t, max_new_tokens=24) for t in texts]
    backend = connect(config).backend(config.generation)
    served = ModelRunner(backend=backend).run(reqs)
    local = ModelRunner(demo_loaded).run(reqs)
    assert [served[r].text for r in reqs] == [local[r].text for r in reqs]
    assert backend.prompt_mismatches == []  # the server tokenised the text as we do
