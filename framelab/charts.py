"""matplotlib, for the commands that draw PNG charts (bench, experiment, sticky).

Imported on first use only, so `framelab --help` stays fast, and on the Agg
backend: charts are files, no screen needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (Any: matplotlib ships no types here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Write `fig` to `path` (making its folder) and release it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
