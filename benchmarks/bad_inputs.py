"""Run every bad or hostile input of tests/bad_input_cases.py and tabulate what happened.

Each case is built in a fresh sandbox and run in-process through ``click.testing.CliRunner``
(the pytest plugin's cases in a pytest subprocess). The table gives the input, the command, the
exit code, the first line of the message, the time it took and whether the case held (the
expected exit code, a one-line message with the expected words, no traceback, and its own
after-checks: nothing written, the previous files intact). The counts follow it.

Run: ``python benchmarks/bad_inputs.py [--only ID ...] [--no-write]``; writes the table into
``docs/bad-inputs.md`` between its ``bad-inputs-table`` markers. Cases that mount a tmpfs need
root; elsewhere they are reported as skipped.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dpo_harness.files import atomic_write_text  # noqa: E402
from tabulate import tabulate  # noqa: E402

from tests.bad_input_cases import CASES, Outcome, run_case  # noqa: E402

DOC = REPO / "docs" / "bad-inputs.md"
BEGIN, END = "<!-- bad-inputs-table -->", "<!-- /bad-inputs-table -->"


def _cell(text: str, limit: int = 160) -> str:
    text = text.replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def counts(outcomes: list[Outcome]) -> dict[str, int]:
    ran = [o for o in outcomes if o.skipped is None]
    return {
        "tried": len(ran),
        "skipped": len(outcomes) - len(ran),
        "held": sum(o.ok for o in ran),
        "exit 2, one line": sum(o.code == 2 and o.one_line_error for o in ran),
        "exit 4, one line (pytest usage error)": sum(o.code == 4 and o.one_line_error for o in ran),
        "exit 0 (now accepted correctly)": sum(o.code == 0 for o in ran),
        "tracebacks": sum(o.traceback for o in ran),
        "exit 3 (internal error)": sum(o.code == 3 for o in ran),
    }


def render(outcomes: list[Outcome], seconds: float) -> str:
    rows = []
    for o in outcomes:
        held = "skipped: " + o.skipped if o.skipped else ("yes" if o.ok else "NO")
        if o.problems:
            held += " (" + "; ".join(o.problems) + ")"
        rows.append(
            [
                f"`{o.case.id}`",
                _cell(o.case.input, 90),
                o.case.origin,
                _cell(f"`{o.command}`", 200) if o.command else "",
                "" if o.code is None else o.code,
                _cell(o.message.replace("`", "'")),
                f"{o.seconds:.1f}",
                held,
            ]
        )
    table = tabulate(
        rows,
        headers=["case", "input", "from", "command", "exit", "message (first line)", "s", "held"],
        tablefmt="github",
    )
    c = counts(outcomes)
    summary = ", ".join(f"{v} {k}" for k, v in c.items())
    return (
        f"{table}\n\n**{summary}.** Run on {platform.platform()}, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}, in {seconds:.0f} s "
        f"(`python benchmarks/bad_inputs.py`).\n"
    )


def write_doc(section: str) -> None:
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else f"{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    atomic_write_text(DOC, f"{head}{BEGIN}\n{section}{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="case ids to run (default: all)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    chosen = [c for c in CASES if not args.only or c.id in args.only]
    outcomes = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bad-inputs-") as tmp:
        shared = Path(tmp) / "shared"
        for i, c in enumerate(chosen, 1):
            root = Path(tmp) / f"{i:03d}-{c.id}"
            root.mkdir()
            outcome = run_case(c, root, shared)
            outcomes.append(outcome)
            status = "skipped" if outcome.skipped else ("ok" if outcome.ok else "FAILED")
            print(
                f"[{i}/{len(chosen)}] {c.id}: exit {outcome.code}, {outcome.seconds:.1f} s, "
                f"{status}: {outcome.message[:150]}",
                flush=True,
            )
    section = render(outcomes, time.perf_counter() - t0)
    print()
    print(section)
    if not args.no_write and not args.only:
        write_doc(section)
        print(f"written to {DOC}")
    return 0 if all(o.ok or o.skipped for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
