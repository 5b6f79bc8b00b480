"""The built-in evaluation suites (importing this package registers them).

- ``numerical``  — numerical health of weights, logits and training logs
- ``repetition`` — repetition and degeneration of generated text
- ``fluency``    — Japanese fluency of generated text
- ``adtech``     — AdTech domain accuracy

Suites of your own are declared in YAML and built by :mod:`dpo_harness.suites.user` (never
registered here: each is an instance built from its file).
"""

from dpo_harness.suites.adtech import AdtechSuite
from dpo_harness.suites.fluency import FluencySuite
from dpo_harness.suites.numerical import NumericalSuite
from dpo_harness.suites.repetition import RepetitionSuite

__all__ = ["AdtechSuite", "FluencySuite", "NumericalSuite", "RepetitionSuite"]
