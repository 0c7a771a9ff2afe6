"""One row per setting: the table's facts, the live value, the last run's figure."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framelab.sysctl.params import BY_NAME, PARAMS, Param

#: longest rendering of one measured value
VALUE_WIDTH = 48


class UnknownSetting(LookupError):
    """A name not in the table: the CLI turns it into one line and exit 2."""


@dataclass(frozen=True)
class Explained:
    param: Param
    live: str | None  # None: no such file on this kernel
    measured: list[str]  # 'name=value' from the last run; empty when there is none
    verdict: str | None  # of the claim in the last run

    def to_json(self) -> dict[str, Any]:
        p = self.param
        return {
            "name": p.name,
            "live": self.live,
            "default": p.default,
            "removed_in": p.removed_in,
            "what": p.what,
            "experiment": p.experiment,
            "claim": p.claim,
            "measured": self.measured,
            "verdict": self.verdict,
        }


def select(names: Iterable[str]) -> list[Param]:
    """The named parameters (full or short names), or all of them.

    UnknownSetting names the first name that is not in the table."""
    chosen = []
    for name in names:
        param = BY_NAME.get(name) or BY_NAME.get(name.replace("/", "."))
        if param is None:
            raise UnknownSetting(name)
        if param not in chosen:
            chosen.append(param)
    return chosen or list(PARAMS)


def live_value(param: Param, root: Path = Path("/proc/sys")) -> str | None:
    """The value as the kernel reports it, tabs and newlines folded to spaces."""
    path = root.joinpath(*param.name.split("."))
    try:
        return " ".join(path.read_text().split())
    except OSError:
        return None


def lookup(observed: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """(found, value) at a '/'-separated path; keys may contain dots."""
    value: Any = observed
    for key in path.split("/"):
        if not isinstance(value, Mapping) or key not in value:
            return False, None
        value = value[key]
    return True, value


def label(path: str) -> str:
    """The last two keys of a path, sysctl prefixes dropped: enough to tell figures apart."""
    keys = [key.removeprefix("net.ipv4.").removeprefix("net.core.") for key in path.split("/")]
    return " ".join(keys[-2:])


def measured_figure(
    param: Param, results: Iterable[Mapping[str, Any]]
) -> tuple[list[str], str | None]:
    """(['leaf=value', ...], verdict) from the claim's result, or ([], None)."""
    if not param.claim:
        return [], None
    result = next((r for r in results if r.get("claim") == param.claim), None)
    if result is None:
        return [], None
    parts = []
    for path in param.measured:
        found, value = lookup(result.get("observed") or {}, path)
        if found:
            text = json.dumps(value, default=str) if not isinstance(value, str) else value
            if len(text) > VALUE_WIDTH:
                text = text[: VALUE_WIDTH - 3] + "..."
            parts.append(f"{label(path)}={text}")
    verdict = result.get("verdict")
    return parts, (str(verdict) if verdict else None)


def explain(
    names: Iterable[str], results: Iterable[Mapping[str, Any]], root: Path = Path("/proc/sys")
) -> list[Explained]:
    saved = list(results)
    rows = []
    for param in select(names):
        measured, verdict = measured_figure(param, saved)
        rows.append(Explained(param, live_value(param, root), measured, verdict))
    return rows
