"""User suites: evaluation suites declared in YAML files, gated exactly like the built-in ones.

A suites file (``--suite-file FILE``, ``suite_files:`` in a config) lists suites, each with a
name, a version, a data source and a kind; an lm-evaluation-harness task YAML may be given in
its place. The format is in ``docs/user-suites.md``.

- :mod:`~dpo_harness.suites.user.declaration` — the file formats, validated field by field;
- :mod:`~dpo_harness.suites.user.sources` — rows from a local JSONL/JSON/parquet file or a
  ``datasets`` id;
- :mod:`~dpo_harness.suites.user.base` — what every user suite is: its identity (declared
  version, data hash, declaration hash) and its metric policy;
- :mod:`~dpo_harness.suites.user.native` — multiple choice, short answer and numeric items
  scored by the ``adtech`` suite's own code, open prompts by the ``repetition`` and
  ``fluency`` suites' own code;
- :mod:`~dpo_harness.suites.user.lm_eval` — ``multiple_choice`` and ``generate_until`` tasks
  scored as lm-evaluation-harness scores them;
- :mod:`~dpo_harness.suites.user.loader` — from files to suites, refusing name clashes.

A user suite's numbers are decided by its data (the data hash), its declaration (the
declaration hash, which also holds :data:`CODE_VERSION` and the versions of the built-in suites
whose code it reuses) and the code in :data:`SCORING_MODULES`: a change there must bump
:data:`CODE_VERSION` (``suites/versions.json``, checked by a test like the built-in suites).
"""

from __future__ import annotations

__all__ = ["CODE_VERSION", "SCORING_MODULES"]

# v1: multiple choice / short answer / numeric (adtech scoring), open prompts (repetition and
# fluency scoring), lm-evaluation-harness multiple_choice and generate_until tasks.
CODE_VERSION = "1"

# The modules whose code turns a user suite's rows into requests and scores.
SCORING_MODULES = (
    "dpo_harness.suites.user.base",
    "dpo_harness.suites.user.native",
    "dpo_harness.suites.user.lm_eval",
)
