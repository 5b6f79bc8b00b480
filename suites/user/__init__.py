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
# v2: an lm-eval multiple_choice task is skipped, with the reason, for a candidate that cannot
# score log-likelihoods (a served model without prompt log-probabilities)
# v3: the built-in scorers a user suite reuses are hashed with it (a change to japanese_share moved
# open-prompt user suites' numbers without moving this version); japanese_share excludes Chinese
CODE_VERSION = "3"

# The modules whose code turns a user suite's rows into requests and scores.
SCORING_MODULES = (
    "dpo_harness.suites.user.base",
    "dpo_harness.suites.user.native",
    "dpo_harness.suites.user.lm_eval",
    # the built-in scoring that user suites reuse: a change there changes their numbers too
    "dpo_harness.suites.common",
    "dpo_harness.suites.adtech",
    "dpo_harness.suites.repetition",
    "dpo_harness.suites.fluency",
    "dpo_harness.suites.metrics.repetition",
    "dpo_harness.suites.metrics.japanese",
)
