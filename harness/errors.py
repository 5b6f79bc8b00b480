"""Errors a user can meet, each with a one-line cause, a fix, and a distinct exit code.

The CLI prints ``error: <cause>`` and ``  fix: <fix>`` and exits with ``exit_code`` — never a
traceback for something the user can correct. Anything else is a bug: one "internal error" line,
the path of a crash log with the traceback, exit 3 (``--debug`` prints tracebacks instead).
"""

from __future__ import annotations

import re

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "BadInputError",
    "BaselineNotFoundError",
    "HarnessError",
    "IncompatibleBaselineError",
    "one_line",
]

EXIT_OK = 0
EXIT_FAILED = 1  # a hard limit failed, the gate refused, or training was stopped
EXIT_BAD_INPUT = 2  # missing checkpoint, malformed config or file, incompatible baseline
EXIT_INTERNAL = 3  # a bug in dpo-harness: "internal error" and the path of a crash log


class HarnessError(Exception):
    """An error the user can act on. ``cause`` is one line; ``fix`` says what to do."""

    exit_code: int = EXIT_BAD_INPUT

    def __init__(self, cause: str, fix: str | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.fix = fix

    def render(self) -> str:
        """``error: <cause>`` and ``  fix: <fix>``, one line each whatever they quote.

        A cause often quotes what the user gave (a path, a field value); a newline or another
        control character in it would break the one-line promise, so it is shown escaped.
        """
        lines = [f"error: {one_line(self.cause)}"]
        if self.fix:
            lines.append(f"  fix: {one_line(self.fix)}")
        return "\n".join(lines)


_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def one_line(text: str) -> str:
    """``text`` with every line break and control character escaped (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class BadInputError(HarnessError):
    """Bad input: a missing path, a malformed file, an invalid option (exit 2)."""


class IncompatibleBaselineError(BadInputError):
    """The stored baseline was computed under different suites, data or generation settings."""


class BaselineNotFoundError(BadInputError):
    """No stored baseline for a base model (train-and-gate then creates one)."""
