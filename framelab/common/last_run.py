"""Where the lab keeps the results of its last run, for commands that explain them.

Every `framelab experiment run` and `framelab demo` saves its results here
(the same JSON list as `--json`), so `framelab sysctl` can show what the last
run measured next to each setting. It sits on the ground floor because the
experiments write it and `framelab sysctl` reads it. The file is
`$FRAMELAB_STATE_DIR/last-run.json`, by default under `$XDG_STATE_HOME/framelab`
(`~/.local/state/framelab`). A run never fails because the file cannot be written.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

FILE_NAME = "last-run.json"


class SavedResult(Protocol):
    """Anything that turns itself into one JSON object (a claim's result does)."""

    def to_json(self) -> dict[str, Any]: ...


def state_dir() -> Path:
    explicit = os.environ.get("FRAMELAB_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "framelab"


def last_run_path() -> Path:
    return state_dir() / FILE_NAME


def save(results: Iterable[SavedResult]) -> Path | None:
    """Write the results; None when the directory cannot be written (read-only home)."""
    path = last_run_path()
    payload = json.dumps([r.to_json() for r in results], indent=1, default=str)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(payload)
        tmp.replace(path)
        return path
    return None


def load(path: Path | None = None) -> list[dict[str, Any]]:
    """The saved results as JSON objects; [] when there is no saved run.

    Raises ValueError when the file exists but is not a results list.
    """
    path = path or last_run_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a results file ({exc})") from exc
    if isinstance(data, dict):  # `framelab demo --json` wraps the list
        data = data.get("experiments", [])
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError(f"{path}: not a results file (expected a list of claim results)")
    return data
