"""matplotlib, for the commands that draw PNG charts (bench, experiment, sticky).

Imported on first use only, so `framelab --help` stays fast, and on the Agg
backend: charts are files, no screen needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ChartsUnavailable(RuntimeError):
    """matplotlib is not installed: it is an extra (`framelab[plot]`)."""


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (Any: matplotlib ships no types here)."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ChartsUnavailable(
            "charts need matplotlib, which is not installed: pip install 'framelab[plot]'"
        ) from exc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Write `fig` to `path` (making its folder) and release it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:  # a figure made with layout="constrained" keeps it
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
