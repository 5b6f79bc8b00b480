"""Every bad or hostile input dpo-harness has been tried on (issue 11), as data.

Each :class:`Case` builds its input in a sandbox directory, names the command that meets it and
says what must happen: the exit code (2 for bad input; 4 for the pytest plugin, whose bad
input is a pytest usage error), a phrase the one-line message must contain, and what must be
true afterwards (nothing written, the previous files intact). :func:`run_case` runs a case
in-process through ``click.testing.CliRunner`` (the pytest plugin's in a pytest subprocess)
and returns what happened; ``tests/unit/test_bad_inputs.py`` and
``tests/integration/test_bad_inputs_model.py`` assert on it, and ``benchmarks/bad_inputs.py``
prints the table and writes ``docs/bad-inputs.md``.

``model=True`` marks a case that loads the demo model (or trains, or evaluates) before the
input is refused; the others are refused before any model is loaded. ``root=True`` marks a
case that mounts a small tmpfs (a full disk, a read-only file system); it is skipped where
mounting is not allowed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CASES", "Case", "Outcome", "Sandbox", "Unavailable", "run_case"]

REPO = Path(__file__).resolve().parents[1]
REPO_BASELINES = REPO / "baselines"


class Unavailable(Exception):
    """The case cannot run here (no root to mount a tmpfs); it is skipped, not passed."""


class Sandbox:
    """A scratch directory for one case, with the inputs the cases are built from."""

    def __init__(self, root: Path, shared: Path) -> None:
        self.root = root
        self.shared = shared  # artifacts reused across cases (the demo evaluation report)
        self._mounts: list[Path] = []

    def __call__(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def write(self, name: str, data: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
        return path

    def demo(self, name: str) -> Path:
        """A copy of the embedded demo model."""
        from dpo_harness.evaluation.loading import demo_model_dir

        return Path(shutil.copytree(demo_model_dir(), self.root / name))

    def baselines(self, name: str = "baselines") -> Path:
        """A copy of the stored baselines (the demo's), safe to write into."""
        target = self.root / name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_BASELINES / "demo.json", target / "demo.json")
        return target

    def demo_report(self) -> Path:
        """The demo model's evaluation report (the one inside its stored baseline): gating it
        with --report decides without loading a model."""
        path = self.shared / "demo-report.json"
        if not path.exists():
            from dpo_harness.gate.baseline import load_baseline

            report = load_baseline(REPO_BASELINES / "demo.json").report
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path

    def tmpfs(self, name: str, size: str) -> Path:
        """A fresh tmpfs of ``size`` mounted at ``name`` (unmounted by :meth:`close`)."""
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            raise Unavailable("mounting a tmpfs needs root")
        path = self.root / name
        path.mkdir(parents=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise Unavailable(f"cannot mount a tmpfs: {done.stderr.strip()}")
        self._mounts.append(path)
        return path

    def read_only(self, mount: Path) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)

    def fill(self, mount: Path, leave: int) -> None:
        """Fill ``mount`` until about ``leave`` bytes are free."""
        free = shutil.disk_usage(mount).free
        with (mount / ".filler").open("wb") as fh:
            fh.write(b"\0" * max(free - leave, 0))

    def close(self) -> None:
        for mount in reversed(self._mounts):
            subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)
        self._mounts.clear()


@dataclass(frozen=True)
class Case:
    id: str
    input: str  # what is bad about it, for the table
    origin: str  # "issue 11", "issue 11: accepted", "issue 11: late" or "new"
    build: Callable[[Sandbox], list[str]]  # makes the input, returns the command's arguments
    words: str  # a phrase the (first) message must contain
    code: int = 2
    model: bool = False
    root: bool = False
    runner: str = "cli"  # "cli" (in-process CliRunner) or "pytest" (the plugin, in a subprocess)
    check: Callable[[Sandbox], list[str]] | None = None  # problems found afterwards ([] = none)


@dataclass
class Outcome:
    case: Case
    code: int | None = None
    message: str = ""  # the first "error:" line (or the first line of output)
    output: str = ""
    traceback: bool = False
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    command: str = ""
    skipped: str | None = None

    @property
    def one_line_error(self) -> bool:
        """Exit 2 (4 under pytest) with exactly one ``error:`` line and no traceback."""
        errors = [line for line in self.output.splitlines() if line.startswith("error: ")]
        plugin = [line for line in self.output.splitlines() if line.startswith("ERROR: error: ")]
        return not self.traceback and (len(errors) == 1 or len(plugin) == 1)

    @property
    def ok(self) -> bool:
        return (
            self.skipped is None
            and self.code == self.case.code
            and not self.traceback
            and self.case.words in self.output
            and not self.problems
            and (self.case.code == 0 or self.one_line_error)
        )


CASES: list[Case] = []


def case(
    id: str,
    input: str,
    *,
    origin: str,
    words: str,
    code: int = 2,
    model: bool = False,
    root: bool = False,
    runner: str = "cli",
    check: Callable[[Sandbox], list[str]] | None = None,
) -> Callable[[Callable[[Sandbox], list[str]]], Callable[[Sandbox], list[str]]]:
    def register(build: Callable[[Sandbox], list[str]]) -> Callable[[Sandbox], list[str]]:
        CASES.append(Case(id, input, origin, build, words, code, model, root, runner, check))
        return build

    return register


# --------------------------------------------------------------------------- checks


def nothing_in(name: str) -> Callable[[Sandbox], list[str]]:
    """The output directory ``name`` holds no file (nothing half-written, nothing at all)."""

    def check(sb: Sandbox) -> list[str]:
        out = sb(name)
        files = [p for p in out.rglob("*") if p.is_file()] if out.is_dir() else []
        return [f"{name} holds {sorted(p.name for p in files)}"] if files else []

    return check


def unchanged(name: str, content: bytes) -> Callable[[Sandbox], list[str]]:
    def check(sb: Sandbox) -> list[str]:
        path = sb(name)
        return [] if path.is_file() and path.read_bytes() == content else [f"{name} changed"]

    return check


def all_of(*checks: Callable[[Sandbox], list[str]]) -> Callable[[Sandbox], list[str]]:
    return lambda sb: [problem for c in checks for problem in c(sb)]


# --------------------------------------------------------------------------- inputs


def _truncated(sb: Sandbox, name: str) -> Path:
    model = sb.demo(name)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return model


def _zero(sb: Sandbox, name: str) -> Path:
    model = sb.demo(name)
    (model / "model.safetensors").write_bytes(b"")
    return model


def _garbage(sb: Sandbox, name: str) -> Path:
    model = sb.demo(name)
    (model / "model.safetensors").write_bytes(bytes(range(256)) * 40)
    return model


def _edit_config(sb: Sandbox, name: str, **changes: Any) -> Path:
    model = sb.demo(name)
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    config.update(changes)
    (model / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    return model


def _adapter(sb: Sandbox, name: str, *, base: str, lora_a_rows: int = 4) -> Path:
    """A LoRA adapter of the demo model's q_proj (r=4), written without loading a model."""
    import torch
    from safetensors.torch import save_file

    out = sb(name)
    out.mkdir(parents=True)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": 4,
        "lora_alpha": 8,
        "target_modules": ["q_proj"],
        "base_model_name_or_path": base,
    }
    (out / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    tensors = {
        f"{prefix}.lora_A.weight": torch.zeros(lora_a_rows, 128),
        f"{prefix}.lora_B.weight": torch.zeros(128, 4),
    }
    save_file(tensors, str(out / "adapter_model.safetensors"))
    return out


def _pickle_model(sb: Sandbox, name: str, payload: bytes) -> Path:
    from dpo_harness.evaluation.loading import demo_model_dir

    out = sb(name)
    out.mkdir(parents=True)
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy2(demo_model_dir() / f, out / f)
    (out / "pytorch_model.bin").write_bytes(payload)
    return out


class _RunsCode:
    """A pickle that runs a shell command when unpickled (what --allow-pickle risks)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _run_config(sb: Sandbox, name: str, training: str, extra: str = "") -> Path:
    text = (
        "model: demo\n"
        f"output_dir: {sb('run')}\n"
        "dataset: {path: demo, split: train, split_field: split}\n"
        "training:\n  precision: fp32\n" + training + extra
    )
    return sb.write(name, text)


def _numeric_item(answer: str) -> str:
    return (
        '{"id": "n1", "type": "numeric", "question": "CTRは何%ですか。", "answer": '
        + answer
        + ', "unit": "%"}\n'
    )


EVAL = ["--suites", "numerical", "--quiet"]
GATE_R = ["--base", "demo", "--baselines-dir", str(REPO_BASELINES), "--quiet"]


# --------------------------------------------------------------------------- issue 11: tracebacks


@case(
    "safetensors-truncated",
    "model.safetensors cut in half",
    origin="issue 11",
    words="not a readable safetensors file",
    check=nothing_in("out"),
)
def _(sb: Sandbox) -> list[str]:
    return ["evaluate", str(_truncated(sb, "m")), *EVAL, "--out", str(sb("out"))]


@case(
    "safetensors-empty",
    "model.safetensors of 0 bytes",
    origin="issue 11",
    words="empty (0 bytes)",
    check=nothing_in("out"),
)
def _(sb: Sandbox) -> list[str]:
    return ["evaluate", str(_zero(sb, "m")), *EVAL, "--out", str(sb("out"))]


@case(
    "safetensors-garbage",
    "model.safetensors of bytes that are not safetensors",
    origin="issue 11",
    words="not a readable safetensors file",
    check=nothing_in("out"),
)
def _(sb: Sandbox) -> list[str]:
    return ["gate", str(_garbage(sb, "m")), *GATE_R, "--out", str(sb("out"))]


@case(
    "pytest-safetensors-truncated",
    "pytest --dpo-checkpoint with a truncated model.safetensors",
    origin="issue 11",
    words="not a readable safetensors file",
    code=4,
    runner="pytest",
)
def _(sb: Sandbox) -> list[str]:
    return ["--dpo-checkpoint", str(_truncated(sb, "m")), "--dpo-base", "demo"]


@case(
    "pytest-safetensors-empty",
    "pytest --dpo-checkpoint with a 0-byte model.safetensors",
    origin="issue 11",
    words="empty (0 bytes)",
    code=4,
    runner="pytest",
)
def _(sb: Sandbox) -> list[str]:
    return ["--dpo-checkpoint", str(_zero(sb, "m")), "--dpo-base", "demo"]


@case(
    "pytest-config-mismatch",
    "pytest --dpo-checkpoint whose weights do not fit config.json (found only when loading)",
    origin="new",
    words="do not fit its config.json",
    code=4,
    runner="pytest",
    model=True,
)
def _(sb: Sandbox) -> list[str]:
    model = _edit_config(sb, "m", intermediate_size=256)
    return ["--dpo-checkpoint", str(model), "--dpo-base", "demo", "--dpo-suites", "numerical"]


@case(
    "tokenizer-missing",
    "no tokenizer files next to the model",
    origin="issue 11",
    words="tokenizer",
    model=True,
    check=nothing_in("out"),
)
def _(sb: Sandbox) -> list[str]:
    model = sb.demo("m")
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (model / f).unlink()
    return ["evaluate", str(model), *EVAL, "--out", str(sb("out"))]


@case(
    "tokenizer-corrupt",
    "tokenizer.json that is not JSON",
    origin="issue 11",
    words="cannot load the tokenizer",
    model=True,
    check=nothing_in("out"),
)
def _(sb: Sandbox) -> list[str]:
    model = sb.demo("m")
    (model / "tokenizer.json").write_text('{"version": "1.0", "model": {', encoding="utf-8")
    return ["evaluate", str(model), *EVAL, "--out", str(sb("out"))]


@case(
    "adapter-wrong-shapes",
    "LoRA adapter whose lora_A has 2 rows for r=4",
    origin="issue 11",
    words="does not fit its base model",
    model=True,
    check=nothing_in("out"),
)
def _(sb: Sandbox) -> list[str]:
    adapter = _adapter(sb, "adapter", base="demo", lora_a_rows=2)
    return ["evaluate", str(adapter), *EVAL, "--out", str(sb("out"))]


@case(
    "pickle-runs-code",
    "--allow-pickle on a .bin whose pickle runs a shell command",
    origin="issue 11",
    words="refused the pickle weights",
    model=True,
    check=lambda sb: ["the pickle's command ran"] if sb("pwned").exists() else [],
)
def _(sb: Sandbox) -> list[str]:
    import pickle

    model = _pickle_model(sb, "m", pickle.dumps({"w": _RunsCode(str(sb("pwned")))}))
    return ["evaluate", str(model), "--allow-pickle", *EVAL, "--out", str(sb("out"))]


@case(
    "pickle-garbage",
    "--allow-pickle on a .bin that is not a pickle",
    origin="issue 11",
    words="pickle weights in",
    model=True,
)
def _(sb: Sandbox) -> list[str]:
    model = _pickle_model(sb, "m", b"this is not a pickle at all")
    return ["evaluate", str(model), "--allow-pickle", *EVAL, "--out", str(sb("out"))]


@case(
    "chat-template-mro",
    "chat template that reaches for ''.__class__.__mro__",
    origin="issue 11",
    words="the sandbox blocked it",
    model=True,
    check=nothing_in("out"),
)
def _(sb: Sandbox) -> list[str]:
    model = sb.demo("m")
    (model / "chat_template.jinja").write_text(
        "{{ ''.__class__.__mro__[1].__subclasses__() }}", encoding="utf-8"
    )
    return ["evaluate", str(model), *EVAL, "--out", str(sb("out"))]


@case(
    "suite-data-binary",
    "--suite-data adtech=FILE of random bytes",
    origin="issue 11",
    words="binary data",
)
def _(sb: Sandbox) -> list[str]:
    data = sb.write("items.jsonl", bytes(range(256)) * 8)
    return ["evaluate", "--suites", "adtech", "--suite-data", f"adtech={data}", "--quiet"]


@case(
    "suite-data-elf",
    "--suite-data adtech=the Python executable (ELF)",
    origin="issue 11",
    words="not JSON Lines",
)
def _(sb: Sandbox) -> list[str]:
    elf = sb.write("python.jsonl", Path(sys.executable).resolve().read_bytes()[:65536])
    return ["evaluate", "--suites", "adtech", "--suite-data", f"adtech={elf}", "--quiet"]


@case(
    "baselines-read-only",
    "baseline update into a baselines directory on a read-only file system",
    origin="issue 11",
    words="read-only file system",
    root=True,
)
def _(sb: Sandbox) -> list[str]:
    mount = sb.tmpfs("ro", "1m")
    shutil.copy2(REPO_BASELINES / "demo.json", mount / "demo.json")
    sb.read_only(mount)
    return ["baseline", "update", "--baselines-dir", str(mount), *EVAL]


@case(
    "promote-to-read-only",
    "gate --promote-to on a read-only file system",
    origin="issue 11",
    words="read-only file system",
    root=True,
    check=nothing_in("out"),
)
def _(sb: Sandbox) -> list[str]:
    mount = sb.tmpfs("ro", "1m")
    sb.read_only(mount)
    report = sb.demo_report()
    return [
        "gate",
        "demo",
        *GATE_R,
        "--report",
        str(report),
        "--promote-to",
        str(mount / "p"),
        "--out",
        str(sb("out")),
    ]


@case(
    "promote-to-under-a-file",
    "gate --promote-to whose parent is a regular file",
    origin="issue 11",
    words="is a file, not a directory",
    check=all_of(nothing_in("out"), unchanged("notes.txt", b"mine")),
)
def _(sb: Sandbox) -> list[str]:
    notes = sb.write("notes.txt", b"mine")
    return [
        "gate",
        "demo",
        *GATE_R,
        "--report",
        str(sb.demo_report()),
        "--promote-to",
        str(notes / "promoted"),
        "--out",
        str(sb("out")),
    ]


@case(
    "promote-to-cwd",
    "gate --promote-to . (the current directory)",
    origin="issue 11",
    words="current (or root) directory",
    check=nothing_in("out"),
)
def _(sb: Sandbox) -> list[str]:
    return [
        "gate",
        "demo",
        *GATE_R,
        "--report",
        str(sb.demo_report()),
        "--promote-to",
        ".",
        "--out",
        str(sb("out")),
    ]


@case(
    "evaluate-out-is-a-file",
    "evaluate --out that is an existing file",
    origin="issue 11",
    words="is an existing file",
    check=unchanged("report", b"an older report"),
)
def _(sb: Sandbox) -> list[str]:
    sb.write("report", b"an older report")
    return ["evaluate", *EVAL, "--out", str(sb("report"))]


@case(
    "evaluate-out-disk-full",
    "evaluate --out on a full disk (tmpfs) holding an earlier report",
    origin="issue 11",
    words="No space left on device",
    model=True,
    root=True,
    check=lambda sb: _earlier_report_intact(sb) + _kept_elsewhere(sb),
)
def _(sb: Sandbox) -> list[str]:
    mount = sb.tmpfs("full", "1m")
    (mount / "out").mkdir()
    for name in ("report.json", "report.md", "report.html"):
        (mount / "out" / name).write_text(f"earlier {name}", encoding="utf-8")
    sb.fill(mount, leave=8192)
    items = sb.write("one.jsonl", _numeric_item("1.5"))
    return [
        "evaluate",
        "--suites",
        "adtech",
        "--suite-data",
        f"adtech={items}",
        "--max-new-tokens",
        "4",
        "--quiet",
        "--out",
        str(mount / "out"),
    ]


def _earlier_report_intact(sb: Sandbox) -> list[str]:
    out = sb("full", "out")
    return [
        f"{name} was replaced"
        for name in ("report.json", "report.md", "report.html")
        if (out / name).read_text(encoding="utf-8") != f"earlier {name}"
    ] + [f"left {p.name}" for p in out.iterdir() if p.name.endswith(".tmp")]


def _kept_elsewhere(sb: Sandbox) -> list[str]:
    from dpo_harness.files import cache_dir

    kept = sorted((cache_dir() / "unsaved").glob("*-out/report.json"))
    return [] if kept else ["the evaluation was not kept anywhere"]


@case(
    "promote-to-disk-full",
    "gate --promote-to on a full disk (tmpfs) holding an earlier promotion",
    origin="issue 11",
    words="No space left on device",
    root=True,
    check=lambda sb: _earlier_promotion_intact(sb),
)
def _(sb: Sandbox) -> list[str]:
    from click.testing import CliRunner
    from dpo_harness.cli import cli

    mount = sb.tmpfs("full", "7m")  # room for one promotion of the 4.9 MB demo model, not two
    first = CliRunner().invoke(
        cli,
        [
            "gate",
            "demo",
            *GATE_R,
            "--report",
            str(sb.demo_report()),
            "--promote-to",
            str(mount / "p"),
            "--out",
            str(sb("first")),
        ],
    )
    if first.exit_code != 0:
        raise RuntimeError(f"the earlier promotion failed: {first.output}")
    other = _edit_config(sb, "candidate", use_cache=False)  # another model: another promotion
    report = sb("report.json")
    raw = json.loads(sb.demo_report().read_text(encoding="utf-8"))
    from dpo_harness.evaluation.loading import resolve_model

    raw["provenance"]["model"]["fingerprint"] = resolve_model(str(other)).fingerprint
    raw["provenance"]["model"]["ref"] = str(other)
    report.write_text(json.dumps(raw), encoding="utf-8")
    return [
        "gate",
        str(other),
        *GATE_R,
        "--report",
        str(report),
        "--promote-to",
        str(mount / "p"),
        "--out",
        str(sb("out")),
    ]


def _earlier_promotion_intact(sb: Sandbox) -> list[str]:
    from dpo_harness.gate.promotion import verify_promotion

    problems = [] if verify_promotion(sb("full", "p")).ok else ["the earlier promotion changed"]
    leftovers = [p.name for p in sb("full").iterdir() if p.name.startswith(".p.promote-")]
    if leftovers:
        problems.append(f"left {leftovers}")
    if not sb("out", "report.json").is_file():
        problems.append("report.json was not kept")
    return problems


@case(
    "baseline-update-disk-full",
    "baseline update into a baselines directory on a full disk (tmpfs)",
    origin="new",
    words="No space left on device",
    model=True,
    root=True,
    check=lambda sb: _baseline_intact(sb),
)
def _(sb: Sandbox) -> list[str]:
    mount = sb.tmpfs("full", "1m")
    shutil.copy2(REPO_BASELINES / "demo.json", mount / "demo.json")
    sb.fill(mount, leave=64 * 1024)  # less than the 270 KB copy that goes to history
    items = sb.write("one.jsonl", _numeric_item("1.5"))
    return [
        "baseline",
        "update",
        "--baselines-dir",
        str(mount),
        "--suites",
        "adtech",
        "--suite-data",
        f"adtech={items}",
        "--max-new-tokens",
        "4",
        "--quiet",
    ]


def _baseline_intact(sb: Sandbox) -> list[str]:
    from dpo_harness.files import cache_dir

    problems = []
    if sb("full", "demo.json").read_bytes() != (REPO_BASELINES / "demo.json").read_bytes():
        problems.append("the current baseline changed")
    left = [p.name for p in sb("full").rglob("*.tmp")]
    if left:
        problems.append(f"left {left}")
    if not list((cache_dir() / "unsaved").glob("*-demo/demo.json")):
        problems.append("the new baseline was not kept anywhere")
    return problems


@case(
    "train-out-disk-full",
    "train with output_dir on a full disk (1 MB tmpfs)",
    origin="issue 11",
    words="No space left on device",
    model=True,
    root=True,
    check=lambda sb: _no_complete_checkpoint_left(sb),
)
def _(sb: Sandbox) -> list[str]:
    mount = sb.tmpfs("full", "1m")
    config = _run_config(
        sb, "run.yaml", "  max_steps: 2\n  save_steps: 1\n  per_device_train_batch_size: 2\n"
    )
    return ["train", "--config", str(config), "--out", str(mount / "run"), "--quiet"]


def _no_complete_checkpoint_left(sb: Sandbox) -> list[str]:
    run = sb("full", "run")
    return [f"{p.name} left where --resume would pick it" for p in run.glob("checkpoint-*")]


@case(
    "train-rows-too-long",
    "train-and-gate where every row is longer than training.max_length",
    origin="issue 11",
    words="no trainable rows",
    model=True,
)
def _(sb: Sandbox) -> list[str]:
    extra = f"gate:\n  baselines_dir: {REPO_BASELINES}\n"
    config = _run_config(sb, "run.yaml", "  max_steps: 2\n  max_length: 8\n", extra)
    return ["train-and-gate", "--config", str(config), "--quiet"]


@case(
    "loss-type-unknown",
    "training.loss_type: [sigmod]",
    origin="issue 11",
    words="unknown DPO loss type",
)
def _(sb: Sandbox) -> list[str]:
    config = _run_config(sb, "run.yaml", "  max_steps: 2\n  loss_type: [sigmod]\n")
    return ["train", "--config", str(config), "--quiet"]


@case(
    "scheduler-unknown",
    "training.lr_scheduler_type: cosine_annealing",
    origin="issue 11",
    words="unknown scheduler",
)
def _(sb: Sandbox) -> list[str]:
    config = _run_config(sb, "run.yaml", "  max_steps: 2\n  lr_scheduler_type: cosine_annealing\n")
    return ["train", "--config", str(config), "--quiet"]


# --------------------------------------------------------------------------- issue 11: accepted


def _other_base_baseline(sb: Sandbox) -> Path:
    from dpo_harness.gate.baseline import load_baseline

    stored = load_baseline(REPO_BASELINES / "demo.json")
    other = stored.model_copy(
        update={"base_model": "other/model", "base_fingerprint": "sha256:" + "0" * 64}
    ).sealed()  # a valid, resealed baseline of another base model
    return sb.write("other.json", other.model_dump_json(indent=1))


@case(
    "baseline-of-another-base",
    "gate --baseline with another base model's baseline (resealed), --base demo",
    origin="issue 11: accepted",
    words="is the baseline of other/model",
    check=nothing_in("out"),
)
def _(sb: Sandbox) -> list[str]:
    return [
        "gate",
        "demo",
        "--base",
        "demo",
        "--baseline",
        str(_other_base_baseline(sb)),
        "--quiet",
        "--out",
        str(sb("out")),
    ]


@case(
    "baseline-of-another-base-no-base",
    "gate --baseline with another base model's baseline, no --base",
    origin="issue 11: accepted",
    words="cannot be found here",
    check=nothing_in("out"),
)
def _(sb: Sandbox) -> list[str]:
    return [
        "gate",
        "demo",
        "--baseline",
        str(_other_base_baseline(sb)),
        "--quiet",
        "--out",
        str(sb("out")),
    ]


@case(
    "report-of-another-model",
    "gate CANDIDATE --report (the demo's report) --promote-to: the report is not the candidate's",
    origin="issue 11: accepted",
    words="is the evaluation of demo",
    check=all_of(nothing_in("out"), lambda sb: ["promoted"] if sb("p").exists() else []),
)
def _(sb: Sandbox) -> list[str]:
    other = _edit_config(sb, "candidate", use_cache=False)
    return [
        "gate",
        str(other),
        *GATE_R,
        "--report",
        str(sb.demo_report()),
        "--promote-to",
        str(sb("p")),
        "--out",
        str(sb("out")),
    ]


@case(
    "report-for-a-corrupt-candidate",
    "gate CORRUPT --report (another model's report) --promote-to",
    origin="issue 11: accepted",
    words="not a readable safetensors file",
    check=all_of(nothing_in("out"), lambda sb: ["promoted"] if sb("p").exists() else []),
)
def _(sb: Sandbox) -> list[str]:
    return [
        "gate",
        str(_garbage(sb, "corrupt")),
        *GATE_R,
        "--report",
        str(sb.demo_report()),
        "--promote-to",
        str(sb("p")),
        "--out",
        str(sb("out")),
    ]


for _id, _margin, _words in (
    ("margin-unknown-metric", "bogus::metric=0.1", "the gated suites do not report"),
    ("margin-nan", "adtech::mc_accuracy=nan", "finite number >= 0"),
    ("margin-negative", "adtech::mc_accuracy=-1", "finite number >= 0"),
    ("margin-infinite", "adtech::mc_accuracy=inf", "finite number >= 0"),
    ("margin-no-value", "adtech::mc_accuracy", "is not SUITE::METRIC=VALUE"),
):

    def _margin_case(sb: Sandbox, margin: str = _margin) -> list[str]:
        return ["gate", "demo", *GATE_R, "--margin", margin, "--out", str(sb("out"))]

    case(
        _id,
        f"--margin {_margin}",
        origin="issue 11: accepted",
        words=_words,
        check=nothing_in("out"),
    )(_margin_case)


@case(
    "numeric-answer-nan",
    'a numeric adtech item with "answer": NaN',
    origin="issue 11: accepted",
    words="field 'answer' is NaN",
)
def _(sb: Sandbox) -> list[str]:
    data = sb.write("items.jsonl", _numeric_item("NaN"))
    return ["evaluate", "--suites", "adtech", "--suite-data", f"adtech={data}", "--quiet"]


@case(
    "numeric-answer-infinity",
    'a numeric adtech item with "answer": 1e999 (parsed as infinity)',
    origin="new",
    words="field 'answer' is Infinity",
)
def _(sb: Sandbox) -> list[str]:
    data = sb.write("items.jsonl", _numeric_item("1e999"))
    return ["evaluate", "--suites", "adtech", "--suite-data", f"adtech={data}", "--quiet"]


@case(
    "suite-item-10mb",
    "a 10 MB adtech question (once 118 s and 1.9 GB, no warning)",
    origin="issue 11: accepted",
    words="line longer than 64 KiB",
)
def _(sb: Sandbox) -> list[str]:
    question = "広告" * (10 * 1024 * 1024 // 6)
    item = {"id": "big", "type": "short_answer", "question": question, "accepted": ["CTR"]}
    data = sb.write("items.jsonl", json.dumps(item, ensure_ascii=False) + "\n")
    return ["evaluate", "--suites", "adtech", "--suite-data", f"adtech={data}", "--quiet"]


@case(
    "gate-demo-promote-to",
    "gate demo --promote-to NEW (was refused only after the whole evaluation)",
    origin="issue 11: late",
    words="PROMOTE",
    code=0,
    check=lambda sb: _promotion_verifies(sb("p")),
)
def _(sb: Sandbox) -> list[str]:
    return [
        "gate",
        "demo",
        *GATE_R,
        "--report",
        str(sb.demo_report()),
        "--promote-to",
        str(sb("p")),
        "--out",
        str(sb("out")),
    ]


def _promotion_verifies(path: Path) -> list[str]:
    from dpo_harness.gate.promotion import verify_promotion

    return [] if path.is_dir() and verify_promotion(path).ok else [f"{path} is not a promotion"]


@case(
    "gate-promote-to-a-file",
    "gate demo --promote-to FILE: refused before anything is evaluated",
    origin="issue 11: late",
    words="is an existing file",
    check=all_of(nothing_in("out"), unchanged("model.bin", b"precious")),
)
def _(sb: Sandbox) -> list[str]:
    target = sb.write("model.bin", b"precious")
    return [
        "gate",
        "demo",
        "--base",
        "demo",
        "--quiet",
        "--promote-to",
        str(target),
        "--out",
        str(sb("out")),
    ]


@case(
    "adapter-base-missing",
    "an adapter whose base_model_name_or_path does not exist",
    origin="issue 11: late",
    words="--base",
    check=nothing_in("out"),
)
def _(sb: Sandbox) -> list[str]:
    adapter = _adapter(sb, "adapter", base=str(sb("no-such-base")))
    return ["gate", str(adapter), "--quiet", "--out", str(sb("out"))]


# --------------------------------------------------------------------------- new hostile inputs


@case(
    "config-json-not-json",
    "config.json that is not JSON",
    origin="new",
    words="not a valid JSON file",
    check=nothing_in("out"),
)
def _(sb: Sandbox) -> list[str]:
    model = sb.demo("m")
    (model / "config.json").write_text("{model_type: qwen2", encoding="utf-8")
    return ["evaluate", str(model), *EVAL, "--out", str(sb("out"))]


@case(
    "config-json-a-list",
    "config.json that is a JSON array",
    origin="new",
    words="model_type",
    check=nothing_in("out"),
)
def _(sb: Sandbox) -> list[str]:
    model = sb.demo("m")
    (model / "config.json").write_text("[1, 2, 3]", encoding="utf-8")
    return ["evaluate", str(model), *EVAL, "--out", str(sb("out"))]


@case(
    "config-unknown-architecture",
    'config.json with "model_type": "no_such_arch"',
    origin="new",
    words="no_such_arch",
    check=nothing_in("out"),
)
def _(sb: Sandbox) -> list[str]:
    return [
        "evaluate",
        str(_edit_config(sb, "m", model_type="no_such_arch")),
        *EVAL,
        "--out",
        str(sb("out")),
    ]


@case(
    "config-weights-mismatch",
    "config.json whose sizes do not match the weights (intermediate_size 256, weights 384)",
    origin="new",
    words="do not fit its config.json",
    model=True,
    check=nothing_in("out"),
)
def _(sb: Sandbox) -> list[str]:
    return [
        "evaluate",
        str(_edit_config(sb, "m", intermediate_size=256)),
        *EVAL,
        "--out",
        str(sb("out")),
    ]


@case(
    "config-without-weights",
    "a directory with config.json and no weights",
    origin="new",
    words="no weight files",
)
def _(sb: Sandbox) -> list[str]:
    model = sb("m")
    model.mkdir()
    shutil.copy2(sb.demo("d") / "config.json", model / "config.json")
    return ["evaluate", str(model), *EVAL, "--out", str(sb("out"))]


@case(
    "checkpoint-symlink-loop",
    "a checkpoint path that is a symbolic link to itself",
    origin="new",
    words="leads nowhere",
)
def _(sb: Sandbox) -> list[str]:
    sb("loop").symlink_to(sb("loop"))
    return ["evaluate", str(sb("loop")), *EVAL, "--out", str(sb("out"))]


@case(
    "weights-are-a-directory",
    "model.safetensors that is a directory",
    origin="new",
    words="is not a regular file",
)
def _(sb: Sandbox) -> list[str]:
    model = sb.demo("m")
    (model / "model.safetensors").unlink()
    (model / "model.safetensors").mkdir()
    return ["evaluate", str(model), *EVAL, "--out", str(sb("out"))]


@case(
    "baseline-is-a-directory",
    "gate --baseline DIR",
    origin="new",
    words="is a directory, not a baseline file",
)
def _(sb: Sandbox) -> list[str]:
    sb("b.json").mkdir()
    return ["gate", "demo", "--baseline", str(sb("b.json")), "--quiet", "--out", str(sb("out"))]


@case(
    "baseline-lock-is-a-directory",
    "baseline update where baselines/.demo.lock is a directory (refused before evaluating)",
    origin="new",
    words="is not a regular file",
)
def _(sb: Sandbox) -> list[str]:
    directory = sb.baselines()
    (directory / ".demo.lock").mkdir()
    return ["baseline", "update", "--baselines-dir", str(directory), *EVAL]


@case(
    "suite-data-empty",
    "--suite-data adtech=an empty file",
    origin="new",
    words="no adtech item",
)
def _(sb: Sandbox) -> list[str]:
    data = sb.write("items.jsonl", "")
    return ["evaluate", "--suites", "adtech", "--suite-data", f"adtech={data}", "--quiet"]


@case(
    "suite-data-array-line",
    "--suite-data adtech=FILE whose line is a JSON array",
    origin="new",
    words="expected a JSON object, got list",
)
def _(sb: Sandbox) -> list[str]:
    data = sb.write("items.jsonl", '["mc-1", "multiple_choice"]\n')
    return ["evaluate", "--suites", "adtech", "--suite-data", f"adtech={data}", "--quiet"]


@case(
    "suite-data-deep-nesting",
    "--suite-data adtech=FILE with JSON nested 30,000 levels deep (within 64 KiB)",
    origin="new",
    words="nested too deeply",
)
def _(sb: Sandbox) -> list[str]:
    data = sb.write("items.jsonl", '{"id": ' + "[" * 30000 + "]" * 30000 + "}\n")
    return ["evaluate", "--suites", "adtech", "--suite-data", f"adtech={data}", "--quiet"]


@case(
    "suite-data-directory",
    "--suite-data adtech=a directory",
    origin="new",
    words="is a directory",
)
def _(sb: Sandbox) -> list[str]:
    sb("items").mkdir()
    return ["evaluate", "--suites", "adtech", "--suite-data", f"adtech={sb('items')}", "--quiet"]


@case(
    "suite-data-device",
    "--suite-data adtech=/dev/zero",
    origin="new",
    words="not a regular file",
)
def _(sb: Sandbox) -> list[str]:
    return ["evaluate", "--suites", "adtech", "--suite-data", "adtech=/dev/zero", "--quiet"]


@case(
    "config-deep-nesting",
    "evaluate --config YAML nested 50,000 levels deep",
    origin="new",
    words="nested too deeply",
)
def _(sb: Sandbox) -> list[str]:
    config = sb.write("eval.yaml", "suites: " + "[" * 50000 + "]" * 50000 + "\n")
    return ["evaluate", "--config", str(config), "--quiet"]


@case(
    "config-is-a-directory",
    "evaluate --config DIR",
    origin="new",
    words="is a directory",
)
def _(sb: Sandbox) -> list[str]:
    sb("conf.yaml").mkdir()
    return ["evaluate", "--config", str(sb("conf.yaml")), "--quiet"]


@case(
    "run-config-not-utf8",
    "train --config with bytes that are not UTF-8 (found by the fuzz test)",
    origin="new",
    words="not UTF-8",
)
def _(sb: Sandbox) -> list[str]:
    config = _run_config(sb, "run.yaml", "  max_steps: 2\n")
    config.write_bytes(config.read_bytes().replace(b"max_steps", b"max\xd2\xa1\x83_steps"))
    return ["train", "--config", str(config)]


@case(
    "max-steps-zero",
    "training.max_steps: 0",
    origin="new",
    words="training.max_steps",
)
def _(sb: Sandbox) -> list[str]:
    return ["train", "--config", str(_run_config(sb, "run.yaml", "  max_steps: 0\n"))]


@case(
    "batch-size-zero",
    "evaluate --batch-size 0",
    origin="new",
    words="batch_size",
)
def _(sb: Sandbox) -> list[str]:
    return ["evaluate", *EVAL, "--batch-size", "0", "--out", str(sb("out"))]


@case(
    "checkpoint-path-with-newline",
    "a checkpoint path with a newline and an escape sequence in it",
    origin="new",
    words="checkpoint not found",
)
def _(sb: Sandbox) -> list[str]:
    return ["evaluate", str(sb("a\nerror: fake\x1b[31m")), *EVAL]


@case(
    "demo-build-over-user-files",
    "demo build --out a directory of the user's files (it was deleted)",
    origin="new",
    words="not an earlier demo build",
    check=unchanged("mine/thesis.txt", b"three years"),
)
def _(sb: Sandbox) -> list[str]:
    sb.write("mine/thesis.txt", b"three years")
    return ["demo", "build", "--steps", "1", "--quiet", "--out", str(sb("mine"))]


@case(
    "demo-variant-out-is-a-file",
    "demo variant nan --out FILE",
    origin="new",
    words="is an existing file",
    check=unchanged("x", b"keep"),
)
def _(sb: Sandbox) -> list[str]:
    return ["demo", "variant", "nan", "--out", str(sb.write("x", b"keep"))]


@case(
    "out-dangling-symlink",
    "evaluate --out a symbolic link to nowhere",
    origin="new",
    words="leads nowhere",
)
def _(sb: Sandbox) -> list[str]:
    sb("out").symlink_to(sb("nowhere", "deeper"))
    return ["evaluate", *EVAL, "--out", str(sb("out"))]


@case(
    "gate-out-is-a-file",
    "gate --out FILE (refused before evaluating)",
    origin="new",
    words="is an existing file",
    check=unchanged("out", b"an older decision"),
)
def _(sb: Sandbox) -> list[str]:
    sb.write("out", b"an older decision")
    return ["gate", "demo", "--base", "demo", "--quiet", "--out", str(sb("out"))]


@case(
    "train-out-is-a-file",
    "train --out FILE",
    origin="new",
    words="is an existing file",
    check=unchanged("run", b"not a directory"),
)
def _(sb: Sandbox) -> list[str]:
    sb.write("run", b"not a directory")
    config = _run_config(sb, "run.yaml", "  max_steps: 2\n")
    return ["train", "--config", str(config), "--out", str(sb("run")), "--quiet"]


@case(
    "system-prompt-refused-by-template",
    "--system-prompt with a chat template that raises on a system message",
    origin="new",
    words="cannot render a conversation",
    model=True,
    check=nothing_in("out"),
)
def _(sb: Sandbox) -> list[str]:
    model = sb.demo("m")
    template = (model / "chat_template.jinja").read_text(encoding="utf-8")
    (model / "chat_template.jinja").write_text(
        "{%- if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
        "supported') }}{%- endif %}" + template,
        encoding="utf-8",
    )
    return [
        "evaluate",
        str(model),
        "--suites",
        "repetition",
        "--system-prompt",
        "あなたは広告の専門家です。",
        "--max-new-tokens",
        "4",
        "--quiet",
        "--out",
        str(sb("out")),
    ]


@case(
    "verify-a-file",
    "verify FILE",
    origin="new",
    words="not a dpo-harness promotion",
)
def _(sb: Sandbox) -> list[str]:
    return ["verify", str(sb.write("decision.json", "{}"))]


@case(
    "baseline-show-not-a-baseline",
    "baseline show on a JSON array",
    origin="new",
    words="is not a valid baseline",
)
def _(sb: Sandbox) -> list[str]:
    return ["baseline", "show", str(sb.write("b.json", "[1, 2]"))]


# --------------------------------------------------------------------------- running


def _display(args: list[str], sb: Sandbox) -> str:
    from dpo_harness.errors import one_line

    root = str(sb.root)
    shown = [one_line(a.replace(root, "$SB").replace(str(REPO), "$REPO")) for a in args]
    return " ".join(shown)


def _message(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("error: ", "ERROR: error: ", "internal error", "INTERNALERROR")):
            return line.removeprefix("ERROR: ")
    lines = [line for line in output.splitlines() if line.strip()]
    verdict = [line for line in lines if line.startswith(("PROMOTE", "REFUSE"))]
    return (verdict or lines or [""])[0]


def run_case(c: Case, root: Path, shared: Path) -> Outcome:
    """Build and run one case in ``root`` (a new empty directory); never raises for the case."""
    sb = Sandbox(root, shared)
    outcome = Outcome(case=c)
    cwd = os.getcwd()
    env_before = {k: os.environ.get(k) for k in ("DPO_HARNESS_CACHE", "DPO_HARNESS_BASELINES")}
    os.environ["DPO_HARNESS_CACHE"] = str(root / ".cache")  # crash logs, kept outputs: per case
    os.environ.pop("DPO_HARNESS_BASELINES", None)
    try:
        os.chdir(root)
        try:
            args = c.build(sb)
        except Unavailable as exc:
            outcome.skipped = str(exc)
            return outcome
        outcome.command = ("pytest " if c.runner == "pytest" else "dpo-harness ") + _display(
            args, sb
        )
        t0 = time.perf_counter()
        if c.runner == "pytest":
            outcome.code, outcome.output = _run_pytest(args, root)
        else:
            outcome.code, outcome.output, outcome.traceback = _run_cli(args)
        outcome.seconds = time.perf_counter() - t0
        outcome.traceback = outcome.traceback or any(
            marker in outcome.output for marker in ("Traceback (most recent", "INTERNALERROR")
        )
        outcome.message = _message(outcome.output)
        for path, name in ((sb.root, "$SB"), (shared, "$SHARED"), (REPO, "$REPO")):
            outcome.message = outcome.message.replace(str(path), name)
        if c.check is not None:
            outcome.problems = c.check(sb)
    finally:
        os.chdir(cwd)
        sb.close()
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return outcome


def _run_cli(args: list[str]) -> tuple[int, str, bool]:
    from click.testing import CliRunner
    from dpo_harness.cli import cli

    result = CliRunner().invoke(cli, args)
    escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
    return result.exit_code, result.output, escaped


def _run_pytest(args: list[str], root: Path) -> tuple[int, str]:
    (root / "test_placeholder.py").write_text("def test_placeholder():\n    pass\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(root),
        "--dpo-baselines-dir",
        str(REPO_BASELINES),
        "--dpo-out",
        str(root / "pytest-out"),
        *args,
        "test_placeholder.py",
    ]
    done = subprocess.run(
        command, cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    return done.returncode, done.stdout + done.stderr
