"""The built-in evaluation suites (importing this package registers them).

- ``numerical``  — numerical health of weights, logits and training logs
- ``repetition`` — repetition and degeneration of generated text
- ``fluency``    — Japanese fluency of generated text
- ``adtech``     — AdTech domain accuracy
"""

from dpo_harness.suites.adtech import AdtechSuite
from dpo_harness.suites.fluency import FluencySuite
from dpo_harness.suites.numerical import NumericalSuite
from dpo_harness.suites.repetition import RepetitionSuite

__all__ = ["AdtechSuite", "FluencySuite", "NumericalSuite", "RepetitionSuite"]
