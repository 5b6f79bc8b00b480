"""Training curves as a PNG: loss, reward margins and accuracies, log-probabilities, grad norm.

NaN points are drawn as red markers on the x axis, so a NaN run looks broken in the picture too
(matplotlib would otherwise just leave a gap).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dpo_harness.files import atomic_write_bytes

__all__ = ["PANELS", "plot_curves"]

PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("loss", ("loss", "eval_loss")),
    ("reward margin", ("rewards/margins", "eval_rewards/margins")),
    ("reward accuracy", ("rewards/accuracies", "eval_rewards/accuracies")),
    ("log-probabilities", ("logps/chosen", "logps/rejected")),
    ("grad norm", ("grad_norm",)),
    ("entropy", ("entropy",)),
)


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for record in history:
        if key in record and isinstance(record[key], (int, float)):
            steps.append(int(record.get("step", 0)))
            values.append(float(record[key]))
    return steps, values


def plot_curves(history: Sequence[Mapping[str, Any]], path: Path, *, title: str = "") -> list[Path]:
    """Write the curves to ``path``; returns [path], or [] when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a training box
    import matplotlib.pyplot as plt

    panels = [(name, keys) for name, keys in PANELS if any(_series(history, k)[0] for k in keys)]
    if not panels:
        return []
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (name, keys) in zip(axes.flat, panels, strict=False):
        for key in keys:
            steps, values = _series(history, key)
            if not steps:
                continue
            finite = [(s, v) for s, v in zip(steps, values, strict=True) if math.isfinite(v)]
            bad = [s for s, v in zip(steps, values, strict=True) if not math.isfinite(v)]
            if finite:
                ax.plot(*zip(*finite, strict=True), marker=".", label=key)
            if bad:
                ax.scatter(
                    bad, [0.0] * len(bad), color="red", marker="x", label=f"{key} NaN/inf", zorder=3
                )
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())  # a kill or a full disk never leaves half a PNG
    return [path]
