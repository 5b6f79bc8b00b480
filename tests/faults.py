"""kill -9 at random moments, then look: is the state the old one or the new one, both complete?

Each *group* runs a command (or a library writer in a loop) in a subprocess of its own process
group, kills it with SIGKILL after a random delay, inspects what is on disk — which phase the
kill interrupted, and whether anything is half-written — and goes on from that state, so a
later run must cope with what the killed ones left. A group ends with one uninterrupted run,
which must succeed and leave no leftovers behind. Used, bounded, by
``tests/integration/test_kill_faults.py`` and, longer, by ``benchmarks/kill_faults.py``.

Groups:

- ``baseline_writer``: ``replace_baseline`` of a 270 KB report in a loop (the write window is
  most of the time, so kills land inside it); the baseline must always load with its checksum.
- ``promotion_writer``: ``promote`` of two 4.9 MB candidates in turn into one target; the target
  must always verify and hold one of the two.
- ``baseline_update``: ``dpo-harness baseline update`` into a temporary baselines directory.
- ``gate_promote``: ``dpo-harness gate CANDIDATE --report R --promote-to P``, two candidates in
  turn.
- ``train``: ``dpo-harness train`` (tiny: ``max_steps`` small, a checkpoint every step), then
  ``--resume`` after every kill; the last run must finish every step.
- ``demo_build``: ``dpo-harness demo build --steps 5 --out DIR``.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["GROUPS", "GroupResult", "Kill", "run_group"]

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Kill:
    delay: float  # seconds after start
    phase: str  # what the kill interrupted, read from the disk afterwards
    problems: list[str]  # anything half-written or inconsistent ([] = the state is sound)


@dataclass
class GroupResult:
    name: str
    kills: list[Kill] = field(default_factory=list)
    finished_without_kill: int = 0  # runs that ended before their kill time (fine, counted)
    final_problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    calibration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.final_problems and not any(k.problems for k in self.kills)


def _env(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "DPO_HARNESS_CACHE": str(root / ".cache"),
        "PYTHONPATH": str(REPO),
    }


def _start(argv: list[str], root: Path, *, capture: bool = False) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        cwd=root,
        env=_env(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if capture else subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill reaches every child
    )


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "dpo_harness.cli", *args]


def _finish(argv: list[str], root: Path, timeout: float = 900) -> tuple[int, str]:
    proc = _start(argv, root, capture=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    return proc.returncode, err.decode("utf-8", "replace")


def _kill_after(
    argv: list[str],
    root: Path,
    delay: float,
    *,
    ready: Path | None = None,
    trigger: Callable[[], bool] | None = None,
) -> bool:
    """Run ``argv``; SIGKILL its process group after ``delay`` s, counted from when ``ready``
    appears (a writer loop past its imports) or ``trigger()`` turns true (a write has begun).
    True if it was killed."""
    ready_file = root / ready if ready is not None else None
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)
        trigger = ready_file.exists
    proc = _start(argv, root)
    if trigger is not None:
        deadline = time.monotonic() + 600
        while not trigger() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


@dataclass
class Group:
    """How to set up, run, read and check one kind of interrupted work."""

    name: str
    setup: Callable[[Path], dict[str, Any]]  # makes the inputs; returns what the others need
    command: Callable[[Path, dict[str, Any], int], list[str]]  # the i-th run's argv
    phase: Callable[[Path, dict[str, Any]], str]  # read after a kill
    check: Callable[[Path, dict[str, Any]], list[str]]  # problems after a kill
    final_check: Callable[[Path, dict[str, Any]], list[str]]  # after the uninterrupted last run
    late_bias: float = 0.5  # share of the kills in the last 30 % of the run (where writes are)
    looping: bool = False  # the command never ends by itself (a writer loop)
    before: Callable[[Path, dict[str, Any]], None] | None = None  # before each killed run
    # True once the run has begun writing: half the kills then wait for it and strike within
    # 0.25 s, so the short write phases are hit on purpose, not by luck.
    writing: Callable[[Path, dict[str, Any]], bool] | None = None


def run_group(
    group: Group, root: Path, *, kills: int, budget_s: float, seed: int = 0
) -> GroupResult:
    """Kill ``group``'s command ``kills`` times (or until ``budget_s`` is spent), then finish."""
    rng = random.Random(f"{seed}-{group.name}")
    root.mkdir(parents=True, exist_ok=True)
    state = group.setup(root)
    result = GroupResult(name=group.name)
    t0 = time.perf_counter()
    if group.looping:
        duration = 1.5  # a writer loop: kill anywhere in its first 1.5 s of writing
    else:  # how long one uninterrupted run takes (and proof that it works from the start)
        code, err = _finish(group.command(root, state, 0), root)
        duration = time.perf_counter() - t0
        if code != 0:
            result.final_problems.append(f"the first run failed (exit {code}): {err[-800:]}")
            return result
    result.calibration_s = round(duration, 1)
    i = 1
    while len(result.kills) < kills and time.perf_counter() - t0 < budget_s:
        late = rng.random() < group.late_bias
        delay = duration * (rng.uniform(0.7, 1.0) if late else rng.uniform(0.05, 0.7))
        if group.looping:
            delay = rng.uniform(0.0, duration)
        if group.before is not None:
            group.before(root, state)
        state["existing"] = _inventory(root)
        ready = Path("ready") if group.looping else None
        trigger = None
        if group.writing is not None and rng.random() < 0.5:
            trigger = functools.partial(group.writing, root, state)
            delay = rng.uniform(0.0, 0.25)
        argv = group.command(root, state, i)
        killed = _kill_after(argv, root, delay, ready=ready, trigger=trigger)
        i += 1
        if not killed:
            result.finished_without_kill += 1
            continue
        result.kills.append(
            Kill(round(delay, 2), group.phase(root, state), group.check(root, state))
        )
    # A writer loop's last run (-1) makes two passes and exits; a command just runs once more.
    argv = group.command(root, state, -1 if group.looping else i)
    code, err = _finish(argv, root)
    if code != 0:
        result.final_problems.append(f"the run after the kills failed (exit {code}): {err[-800:]}")
    result.final_problems += group.final_check(root, state)
    result.seconds = round(time.perf_counter() - t0, 1)
    return result


# --------------------------------------------------------------------------- helpers


def _inventory(root: Path) -> set[tuple[str, int]]:
    """Every path under ``root`` with its inode: what a run found when it started."""
    found = set()
    for p in root.rglob("*"):
        try:
            found.add((str(p), p.lstat().st_ino))
        except OSError:
            continue
    return found


def _fresh(s: dict[str, Any], directory: Path, *patterns: str) -> list[str]:
    """Entries matching ``patterns`` made by the run just killed — not leftovers of an earlier
    kill, which the next run removes only when it reaches the same step."""
    existing = s.get("existing", set())
    out = []
    for pattern in patterns:
        for p in directory.glob(pattern):
            try:
                if (str(p), p.lstat().st_ino) not in existing:
                    out.append(p.name)
            except OSError:
                continue
    return sorted(out)


def _leftovers(directory: Path, *patterns: str) -> list[str]:
    return sorted(p.name for pattern in patterns for p in directory.glob(pattern))


def _demo_copy(root: Path, name: str, **config: Any) -> Path:
    from dpo_harness.evaluation.loading import demo_model_dir

    target = root / name
    shutil.copytree(demo_model_dir(), target)
    if config:
        raw = json.loads((target / "config.json").read_text(encoding="utf-8"))
        raw.update(config)
        (target / "config.json").write_text(json.dumps(raw, indent=1), encoding="utf-8")
    return target


def _baseline_problems(directory: Path) -> list[str]:
    """Every baseline file (current and history) loads with a valid checksum."""
    from dpo_harness.errors import HarnessError
    from dpo_harness.gate.baseline import load_baseline

    problems = []
    current = directory / "demo.json"
    if not current.is_file():
        problems.append("no current baseline")
    for path in [current, *sorted((directory / "history").rglob("*.json"))]:
        if path.is_file():
            try:
                load_baseline(path)
            except HarnessError as exc:
                problems.append(f"{path.name}: {exc.cause}")
    return problems


# --------------------------------------------------------------------------- writer loops


_BASELINE_LOOP = """
import sys
from pathlib import Path
from dpo_harness.gate.baseline import load_baseline, replace_baseline
report = load_baseline(Path(sys.argv[1])).report
directory, passes = Path(sys.argv[2]), int(sys.argv[3])
Path("ready").touch()
i = 0
while passes < 0 or i < passes:
    copy = report.model_copy(deep=True)
    copy.provenance.seed = i  # another content: another checksum, another history entry
    replace_baseline(copy, directory, reason=f"loop {i}")
    i += 1
"""


def _baseline_writer() -> Group:
    def setup(root: Path) -> dict[str, Any]:
        directory = root / "baselines"
        directory.mkdir()
        shutil.copy2(REPO / "baselines" / "demo.json", directory / "demo.json")
        return {"dir": directory}

    def command(root: Path, s: dict[str, Any], i: int) -> list[str]:
        passes = "2" if i < 0 else "-1"
        src = str(REPO / "baselines" / "demo.json")
        return [sys.executable, "-c", _BASELINE_LOOP, src, str(s["dir"]), passes]

    def phase(root: Path, s: dict[str, Any]) -> str:
        tmp = _fresh(s, s["dir"], ".demo.json.*.tmp")
        hist = _fresh(s, s["dir"] / "history" / "demo", ".*.tmp")
        if tmp:
            return "writing the new baseline (temporary file present)"
        if hist:
            return "copying the old baseline to history"
        return "between writes (lock, checksum, serialising)"

    def check(root: Path, s: dict[str, Any]) -> list[str]:
        return _baseline_problems(s["dir"])

    return Group("baseline_writer", setup, command, phase, check, check, looping=True)


_PROMOTE_LOOP = """
import sys
from pathlib import Path
from dpo_harness.gate.promotion import promote
from tests.helpers import promotion_decision
candidates = [Path(sys.argv[1]), Path(sys.argv[2])]
target, passes = Path(sys.argv[3]), int(sys.argv[4])
decisions = [promotion_decision(c) for c in candidates]
Path("ready").touch()
i = 0
while passes < 0 or i < passes:
    promote(candidates[i % 2], target, decisions[i % 2])
    i += 1
"""


def _promoted_is_one_of(target: Path, candidates: list[Path]) -> list[str]:
    from dpo_harness.gate.promotion import verify_promotion

    if not target.exists():
        return []  # nothing promoted yet: the old state
    problems = [] if verify_promotion(target).ok else [f"{target.name} does not verify"]
    weights = (target / "model.safetensors").read_bytes()
    if not any(weights == (c / "model.safetensors").read_bytes() for c in candidates):
        problems.append(f"{target.name} holds neither candidate")
    return problems


def _promotion_phase(root: Path, target: Path, s: dict[str, Any]) -> str:
    if _fresh(s, root, f".{target.name}.replaced-*"):
        return "between the two renames (earlier promotion set aside)"
    if _fresh(s, root, f".{target.name}.promote-*"):
        return "assembling the promotion (temporary directory present)"
    return "outside the copy (hashing, fingerprinting, lock, swap)"


def _promotion_writer() -> Group:
    def setup(root: Path) -> dict[str, Any]:
        a = _demo_copy(root, "a")
        b = _demo_copy(root, "b", use_cache=False)
        return {"candidates": [a, b], "target": root / "promoted"}

    def command(root: Path, s: dict[str, Any], i: int) -> list[str]:
        a, b = s["candidates"]
        passes = "2" if i < 0 else "-1"
        return [sys.executable, "-c", _PROMOTE_LOOP, str(a), str(b), str(s["target"]), passes]

    def phase(root: Path, s: dict[str, Any]) -> str:
        return _promotion_phase(root, s["target"], s)

    def check(root: Path, s: dict[str, Any]) -> list[str]:
        return _promoted_is_one_of(s["target"], s["candidates"])

    def final(root: Path, s: dict[str, Any]) -> list[str]:
        left = _leftovers(root, ".promoted.promote-*", ".promoted.replaced-*")
        return check(root, s) + ([f"leftovers after a clean run: {left}"] if left else [])

    return Group("promotion_writer", setup, command, phase, check, final, looping=True)


# --------------------------------------------------------------------------- CLI groups


def _baseline_update() -> Group:
    def setup(root: Path) -> dict[str, Any]:
        directory = root / "baselines"
        directory.mkdir()
        shutil.copy2(REPO / "baselines" / "demo.json", directory / "demo.json")
        item = (
            '{"id": "n1", "type": "numeric", "question": "表示回数1000回でクリック15回の'
            'CTRは何%ですか。", "answer": 1.5, "unit": "%"}\n'
        )
        (root / "one.jsonl").write_text(item, encoding="utf-8")
        return {"dir": directory}

    def command(root: Path, s: dict[str, Any], i: int) -> list[str]:
        return _cli(
            "baseline", "update", "--baselines-dir", str(s["dir"]), "--suites", "adtech",
            "--suite-data", f"adtech={root / 'one.jsonl'}", "--max-new-tokens", "4",
            "--quiet", "--reason", f"run {i}",
        )  # fmt: skip

    def written(s: dict[str, Any]) -> tuple[int, bytes]:
        d = s["dir"]
        reports = len(list((d / "reports").glob("*"))) if (d / "reports").is_dir() else 0
        return reports, (d / "demo.json").read_bytes()

    def before(root: Path, s: dict[str, Any]) -> None:
        s["before"] = written(s)

    def phase(root: Path, s: dict[str, Any]) -> str:
        d = s["dir"]
        if _fresh(s, d, ".demo.json.*.tmp") or _fresh(s, d / "history" / "demo", ".*.tmp"):
            return "writing the new baseline"
        if _fresh(s, d / "reports", ".*.tmp"):
            return "writing the update report"
        reports, current = written(s)
        old_reports, old_current = s["before"]
        if current != old_current:
            return "after the baseline was replaced" + (
                ", report written" if reports > old_reports else ", before the report"
            )
        return "starting up or evaluating (nothing written yet)"

    def check(root: Path, s: dict[str, Any]) -> list[str]:
        return _baseline_problems(s["dir"])

    def final(root: Path, s: dict[str, Any]) -> list[str]:
        return check(root, s)

    def writing(root: Path, s: dict[str, Any]) -> bool:
        d = s["dir"]
        return bool(
            _fresh(s, d, ".demo.json.*.tmp")
            or _fresh(s, d / "history" / "demo", ".*.tmp")
            or _fresh(s, d / "reports", ".*.tmp")
        )

    return Group(
        "baseline_update", setup, command, phase, check, final, before=before, writing=writing
    )


def _gate_promote() -> Group:
    def setup(root: Path) -> dict[str, Any]:
        from dpo_harness.evaluation.loading import resolve_model
        from dpo_harness.gate.baseline import load_baseline

        report = load_baseline(REPO / "baselines" / "demo.json").report
        candidates, reports = [], []
        for k, config in enumerate(({"use_cache": True}, {"use_cache": False})):
            cand = _demo_copy(root, f"cand{k}", **config)
            copy = report.model_copy(deep=True)
            copy.provenance.model.fingerprint = resolve_model(str(cand)).fingerprint
            copy.provenance.model.ref = str(cand)
            path = root / f"report{k}.json"
            path.write_text(copy.model_dump_json(indent=2), encoding="utf-8")
            candidates.append(cand)
            reports.append(path)
        return {"candidates": candidates, "reports": reports, "target": root / "promoted"}

    def command(root: Path, s: dict[str, Any], i: int) -> list[str]:
        k = i % 2
        s["out"] = root / f"gate-{i}"  # where this run writes: what phase() looks at
        return _cli(
            "gate", str(s["candidates"][k]), "--base", "demo", "--baselines-dir",
            str(REPO / "baselines"), "--report", str(s["reports"][k]), "--promote-to",
            str(s["target"]), "--out", str(root / f"gate-{i}"), "--quiet",
        )  # fmt: skip

    def phase(root: Path, s: dict[str, Any]) -> str:
        found = _promotion_phase(root, s["target"], s)
        if not found.startswith("outside"):
            return found
        last = s["out"]
        if not (last / "report.json").exists():
            return "starting up or preparing (nothing written yet)"
        if not (last / "decision.json").exists():
            return "after report.json, before the decision (promoting)"
        return "after the decision was written"

    def check(root: Path, s: dict[str, Any]) -> list[str]:
        # The visible outputs are whole or absent. A kill mid-write can leave a hidden
        # ".NAME.*.tmp" beside them: never read, and removed by a later write to that directory.
        problems = _promoted_is_one_of(s["target"], s["candidates"])
        for out in root.glob("gate-*"):
            for name in ("report.json", "decision.json"):
                if (out / name).exists():
                    try:
                        json.loads((out / name).read_text(encoding="utf-8"))
                    except ValueError:
                        problems.append(f"{out.name}/{name} is half-written")
        return problems

    def final(root: Path, s: dict[str, Any]) -> list[str]:
        left = _leftovers(root, ".promoted.promote-*", ".promoted.replaced-*")
        return check(root, s) + ([f"leftovers after a clean run: {left}"] if left else [])

    def writing(root: Path, s: dict[str, Any]) -> bool:
        return bool(_fresh(s, root, ".promoted.promote-*"))

    return Group(
        "gate_promote", setup, command, phase, check, final, late_bias=0.7, writing=writing
    )


def _train(max_steps: int = 6) -> Group:
    def setup(root: Path) -> dict[str, Any]:
        config = root / "run.yaml"
        config.write_text(
            "model: demo\n"
            f"output_dir: {root / 'run'}\n"
            "dataset: {path: demo, split: train, split_field: split}\n"
            "training:\n  precision: fp32\n"
            f"  max_steps: {max_steps}\n  save_steps: 1\n  logging_steps: 1\n"
            "  per_device_train_batch_size: 2\n",
            encoding="utf-8",
        )
        return {"config": config, "run": root / "run"}

    def command(root: Path, s: dict[str, Any], i: int) -> list[str]:
        if i == 0:  # the calibration run trains from scratch into its own directory
            return _cli("train", "--config", str(s["config"]), "--out", str(root / "first"))
        return _cli("train", "--config", str(s["config"]), "--quiet", "--resume")

    def phase(root: Path, s: dict[str, Any]) -> str:
        from dpo_harness.plugins.dpo.trainer import _checkpoint_dirs, _is_complete

        run = s["run"]
        if _fresh(s, run, ".final.saving-*"):
            return "saving final/"
        if (run / "final").is_dir():
            return "after final/ was saved"
        dirs = _checkpoint_dirs(run) if run.is_dir() else []
        fresh = set(_fresh(s, run, "checkpoint-*")) if run.is_dir() else set()
        half = [p.name for _, p in dirs if p.name in fresh and not _is_complete(p)]
        if half:
            return f"saving {half[-1]}"
        if dirs:
            return f"training after {dirs[-1][1].name}"
        return "starting up (no checkpoint yet)"

    def check(root: Path, s: dict[str, Any]) -> list[str]:
        # A half-written checkpoint-N is expected after a kill while saving: the next --resume
        # must set it aside (checked at the end); a half-written final/ must never exist.
        final = s["run"] / "final"
        if final.is_dir() and not (
            (final / "trainer_state.json").is_file() and any(final.glob("*.safetensors"))
        ):
            return ["final/ is half-written"]
        return []

    def before(root: Path, s: dict[str, Any]) -> None:
        # A run that reached its last step is checked and put aside; the next one starts a new
        # run from step 0, so every kill interrupts real training, not a resume with nothing
        # left to do.
        if (s["run"] / "final").is_dir():
            s.setdefault("problems", []).extend(finished(s["run"]))
            s["done"] = s.get("done", 0) + 1
            os.replace(s["run"], root / f"run-finished-{s['done']}")

    def finished(run: Path) -> list[str]:
        from dpo_harness.plugins.dpo.trainer import _checkpoint_dirs, _is_complete

        problems: list[str] = []
        state_file = run / "final" / "trainer_state.json"
        if not state_file.is_file():
            return [*problems, "no final/ after the last --resume"]
        steps = json.loads(state_file.read_text(encoding="utf-8")).get("global_step")
        if steps != max_steps:
            problems.append(f"final/ is at step {steps}, not {max_steps}")
        half = [p.name for _, p in _checkpoint_dirs(run) if not _is_complete(p)]
        if half:
            problems.append(f"incomplete checkpoints not set aside: {half}")
        left = _leftovers(run, ".final.saving-*", ".final.replaced-*")
        if left:
            problems.append(f"leftovers after a clean run: {left}")
        return problems

    def final(root: Path, s: dict[str, Any]) -> list[str]:
        return [*s.get("problems", []), *check(root, s), *finished(s["run"])]

    def writing(root: Path, s: dict[str, Any]) -> bool:
        from dpo_harness.plugins.dpo.trainer import _checkpoint_dirs, _is_complete

        run = s["run"]
        if not run.is_dir():
            return False
        fresh = set(_fresh(s, run, "checkpoint-*"))
        return bool(_fresh(s, run, ".final.saving-*")) or any(
            p.name in fresh and not _is_complete(p) for _, p in _checkpoint_dirs(run)
        )

    return Group(
        "train", setup, command, phase, check, final, late_bias=0.3, before=before, writing=writing
    )


def _demo_build() -> Group:
    def setup(root: Path) -> dict[str, Any]:
        return {"out": root / "demo-model"}

    def command(root: Path, s: dict[str, Any], i: int) -> list[str]:
        return _cli("demo", "build", "--steps", "5", "--quiet", "--out", str(s["out"]))

    def phase(root: Path, s: dict[str, Any]) -> str:
        if _fresh(s, root, ".demo-model.replaced-*"):
            return "between the two renames"
        if _fresh(s, root, ".demo-model.build-*"):
            return "saving into the temporary directory"
        return "starting up or training (nothing written yet)"

    def check(root: Path, s: dict[str, Any]) -> list[str]:
        from dpo_harness.errors import HarnessError
        from dpo_harness.evaluation.loading import resolve_checkpoint

        out = s["out"]
        if not out.exists():
            return ["the earlier build is gone"]
        problems = [] if (out / "build_info.json").is_file() else ["no build_info.json"]
        try:
            resolve_checkpoint(str(out))  # reads every safetensors header
        except HarnessError as exc:
            problems.append(exc.cause)
        return problems

    def final(root: Path, s: dict[str, Any]) -> list[str]:
        left = _leftovers(root, ".demo-model.build-*", ".demo-model.replaced-*")
        return check(root, s) + ([f"leftovers after a clean run: {left}"] if left else [])

    def writing(root: Path, s: dict[str, Any]) -> bool:
        return bool(_fresh(s, root, ".demo-model.build-*"))

    return Group("demo_build", setup, command, phase, check, final, late_bias=0.6, writing=writing)


GROUPS: dict[str, Callable[[], Group]] = {
    "baseline_writer": _baseline_writer,
    "promotion_writer": _promotion_writer,
    "baseline_update": _baseline_update,
    "gate_promote": _gate_promote,
    "train": _train,
    "demo_build": _demo_build,
}


# --------------------------------------------------------------------------- concurrency


def concurrent_updates(root: Path) -> list[str]:
    """Two ``baseline update`` processes at once on one directory: both succeed, one after the
    other, and each update report names the baseline it actually replaced. Returns problems."""
    from dpo_harness.gate.baseline import load_baseline

    group = _baseline_update()
    root.mkdir(parents=True, exist_ok=True)
    state = group.setup(root)
    directory = state["dir"]
    original = load_baseline(directory / "demo.json").checksum
    procs = [_start(group.command(root, state, i), root, capture=True) for i in (1, 2)]
    problems = []
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            problems.append(f"an update failed (exit {proc.returncode}): {err.decode()[-400:]}")
    if problems:
        return problems
    current = load_baseline(directory / "demo.json").checksum
    history = {load_baseline(p).checksum for p in (directory / "history").rglob("*.json")}
    middle = history - {original}
    if original not in history or len(middle) != 1 or current in history:
        return [f"history {sorted(history)} is not original + first update (current {current})"]
    replaced = []
    for report in sorted((directory / "reports").glob("*.md")):
        lines = report.read_text(encoding="utf-8").splitlines()
        old = next((line for line in lines if line.startswith("- old:")), "")
        replaced += [c for c in (original, *middle) if c[:19] in old]
    if sorted(replaced) != sorted([original, *middle]):
        problems.append("the two update reports do not each name the baseline they replaced")
    return problems
