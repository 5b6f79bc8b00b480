"""The built-in evaluation suites (importing this package registers them).

- ``numerical``  — numerical health of weights, logits and training logs
- ``repetition`` — repetition and degeneration of generated text
- ``fluency``    — Japanese fluency of generated text
- ``adtech``     — AdTech domain accuracy
"""

from .adtech import AdtechSuite
from .fluency import FluencySuite
from .numerical import NumericalSuite
from .repetition import RepetitionSuite

__all__ = ["AdtechSuite", "FluencySuite", "NumericalSuite", "RepetitionSuite"]
