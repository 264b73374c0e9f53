"""The latency distributions of a run as a PNG, written beside the JSON report.

One panel per group of phases (remote validation against its floor; everything else),
each phase's latencies as a cumulative distribution on a log scale, so that the body and
the tail of every phase read off one picture. matplotlib is a benchmark-only extra
(``pip install -e .[bench]``, which scripts/bench installs); without it no plot is drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

# Phases drawn on the first panel, when measured; the rest go on the second.
VALIDATION_PANEL = "remote validation against the floor"
OTHER_PANEL = "everything else under load"
# A phase's curve is drawn through this many of its latencies at most.
POINTS = 2_000


def available() -> bool:
    """Whether matplotlib is installed (the ``bench`` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _thinned(latencies: Sequence[float]) -> tuple[list[float], list[float]]:
    """Milliseconds and cumulative fractions of sorted ``latencies``, at most POINTS of them."""
    count = len(latencies)
    step = max(1, count // POINTS)
    indexes = list(range(0, count, step))
    if indexes[-1] != count - 1:
        indexes.append(count - 1)
    return [latencies[i] * 1000 for i in indexes], [(i + 1) / count for i in indexes]


def write(path: Path, latencies: Mapping[str, Sequence[float]], first_panel: Sequence[str], title: str) -> Path:
    """Draws every phase of ``latencies`` (name -> sorted seconds) to ``path``; the
    phases named in ``first_panel`` on a panel of their own, in that order."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display
    import matplotlib.pyplot as plt

    measured = {name: values for name, values in latencies.items() if values}
    panels = [(VALIDATION_PANEL, [name for name in first_panel if name in measured]),
              (OTHER_PANEL, [name for name in measured if name not in first_panel])]
    panels = [(heading, names) for heading, names in panels if names]
    figure, axes = plt.subplots(len(panels), 1, figsize=(11, 5.5 * len(panels)), squeeze=False)
    for (heading, names), axis in zip(panels, axes[:, 0]):
        for name in names:
            milliseconds, fractions = _thinned(measured[name])
            axis.plot(milliseconds, fractions, label=name, linewidth=1.4)
        axis.set_xscale("log")
        axis.set_xlabel("latency, ms (log scale)")
        axis.set_ylabel("fraction of calls at or below")
        axis.set_ylim(0, 1.0)
        axis.grid(True, which="both", alpha=0.3)
        axis.set_title(heading)
        axis.legend(fontsize=7, loc="lower right")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
