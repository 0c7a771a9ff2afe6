"""Experiment results for people (rich tables) and for programs (a JSON list).

For people: the environment once (kernel, Python, root: what decides which
claims can be checked), then one table per experiment with a row per claim
(verdict in colour, each part of the claim with holds/fails/not observed and
its evidence, what the kernel's rules predict labelled "expected", the key
observed values in a compact form) and its packet trace, dimmed, below it; last, a line with the
counts. Every string from an experiment is printed as plain text, never as
rich markup: traces are full of "[S.]" and "[P.]".

For programs: `write_json(path, results)` writes a JSON list with one object
per claim (ClaimResult.to_json(): experiment, claim, verdict, summary,
observed, trace, parts, expected, context) and nothing else, so the file
can be loaded and compared as is.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framelab.experiments.context import running_as_root
from framelab.experiments.result import ClaimResult, Verdict

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

VERDICT_STYLES = {
    Verdict.CONFIRMED: "bold green",
    Verdict.PARTLY: "bold cyan",
    Verdict.DIFFERS: "bold yellow",
    Verdict.SKIPPED: "grey50",
}
#: observed values shown per claim unless asked for all of them
OBSERVED_LINES = 12
#: longest rendering of one observed value
VALUE_WIDTH = 60
#: items of a list shown before "..."
LIST_ITEMS = 6


def environment() -> dict[str, Any]:
    """What the verdicts depend on besides the code: kernel, Python, privileges."""
    return {
        "kernel": platform.release(),
        "system": platform.system(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "uvloop": _uvloop_version(),
        "cpus": os.cpu_count(),
        "root": running_as_root(),
    }


def _uvloop_version() -> str | None:
    try:
        import uvloop
    except ImportError:
        return None
    version: str = getattr(uvloop, "__version__", "installed")
    return version


def environment_line(env: Mapping[str, Any] | None = None) -> str:
    env = env if env is not None else environment()
    root = (
        "root: packet captures and network namespaces on"
        if env["root"]
        else "not root: captures and namespace claims are skipped"
    )
    uvloop = f"uvloop {env['uvloop']}" if env["uvloop"] else "no uvloop"
    return (
        f"{env['system']} {env['kernel']} ({env['machine']}, {env['cpus']} CPUs), "
        f"{env['implementation']} {env['python']}, {uvloop}; {root}"
    )


def render_environment(console: Console, env: Mapping[str, Any] | None = None) -> None:
    from rich.text import Text

    console.print(Text(environment_line(env), style="bold"))


# -- observed values, compactly -------------------------------------------------------------
def flatten(observed: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Nested dicts as dotted keys: {"a": {"b": 1}} -> ("a.b", 1)."""
    for key, value in observed.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten(value, name + ".")
        else:
            yield name, value


def format_value(value: Any) -> str:
    """A short, readable rendering: yes/no, '-', lists cut after a few items."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        items = [format_value(v) for v in value[:LIST_ITEMS]]
        more = f", ... ({len(value)} in all)" if len(value) > LIST_ITEMS else ""
        text = "[" + ", ".join(items) + more + "]"
    elif isinstance(value, Mapping):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 3] + "..."


def compact_observed(observed: Mapping[str, Any], max_lines: int | None = OBSERVED_LINES) -> str:
    """'key: value' lines for the table; the full values are in the JSON output."""
    lines = [f"{key}: {format_value(value)}" for key, value in flatten(observed)]
    if max_lines is not None and len(lines) > max_lines:
        hidden = len(lines) - max_lines + 1
        lines = [*lines[: max_lines - 1], f"... {hidden} more (all of them: --verbose or --json)"]
    return "\n".join(lines)


# -- tables ---------------------------------------------------------------------------------
def by_experiment(results: Iterable[ClaimResult]) -> dict[str, list[ClaimResult]]:
    """Results grouped by experiment, in the order they were run."""
    groups: dict[str, list[ClaimResult]] = {}
    for result in results:
        groups.setdefault(result.experiment, []).append(result)
    return groups


def counts(results: Iterable[ClaimResult]) -> dict[Verdict, int]:
    tally = dict.fromkeys(Verdict, 0)
    for result in results:
        tally[result.verdict] += 1
    return tally


PART_STYLES = {True: "green", False: "yellow", None: "grey50"}
PART_MARKS = {True: "+", False: "x", None: "?"}


def describe_result(result: ClaimResult) -> Text:
    """The parts, one line each with its mark and evidence; else the summary."""
    from rich.text import Text

    if len(result.parts) <= 1:
        text = Text(result.summary)
    else:
        text = Text()
        for index, part in enumerate(result.parts):
            if index:
                text.append("\n")
            text.append(f"{PART_MARKS[part.holds]} {part.part}: ", style=PART_STYLES[part.holds])
            text.append(part.evidence)
    if result.expected:
        expected = "; ".join(f"{k}: {format_value(v)}" for k, v in result.expected.items())
        text.append(f"\nexpected (kernel rules, not observed): {expected}", style="dim")
    return text


def render_experiment(
    console: Console, name: str, results: Sequence[ClaimResult], max_lines: int | None
) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(name, style="bold"), title_justify="left", show_lines=True)
    table.add_column("claim", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("summary", ratio=3, overflow="fold")
    table.add_column("observed", ratio=2, overflow="fold")
    for result in results:
        table.add_row(
            Text(result.claim),
            Text(result.verdict.value, style=VERDICT_STYLES[result.verdict]),
            describe_result(result),
            Text(compact_observed(result.observed, max_lines), style="cyan"),
        )
    console.print(table)
    for result in results:
        if result.trace:
            console.print(Text(f"{result.claim} trace:", style="dim bold"))
            for line in result.trace:
                console.print(Text(line, style="dim"), soft_wrap=True)


def render_summary(
    console: Console, results: Sequence[ClaimResult], elapsed: float | None = None
) -> None:
    from rich.text import Text

    tally = counts(results)
    line = Text()
    for index, verdict in enumerate(Verdict):
        if index:
            line.append(", ")
        line.append(f"{tally[verdict]} {verdict.value}", style=VERDICT_STYLES[verdict])
    if elapsed is not None:
        line.append(f" in {elapsed:.1f} s")
    console.print(line)


def render(
    console: Console,
    results: Sequence[ClaimResult],
    *,
    elapsed: float | None = None,
    max_lines: int | None = OBSERVED_LINES,
) -> None:
    """Every experiment's table and traces, then the counts."""
    for name, group in by_experiment(results).items():
        render_experiment(console, name, group, max_lines)
    render_summary(console, results, elapsed)


# -- JSON -----------------------------------------------------------------------------------
def write_json(path: str | os.PathLike[str], results: Iterable[ClaimResult]) -> None:
    """A JSON list of result objects (ClaimResult.to_json(), parts included)."""
    data = [result.to_json() for result in results]
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")


# -- Markdown -------------------------------------------------------------------------------
def markdown_table(results: Iterable[ClaimResult], env: Mapping[str, Any] | None = None) -> str:
    """The claims table for a README: ID, claim, verdict, the one-line why."""
    from framelab.experiments.claims import TEXTS

    rows = sorted(results, key=lambda r: (r.claim, r.experiment))
    lines = [
        f"Seen on {environment_line(env)}.",
        "",
        "| claim | what the notes say | verdict | what this kernel did |",
        "|---|---|---|---|",
    ]
    for r in rows:
        why = markdown_parts(r).replace("|", "\\|").replace("\n", " ")
        text = TEXTS.get(r.claim, "").replace("|", "\\|")
        lines.append(f"| {r.claim} | {text} | {r.verdict.value} ({r.experiment}) | {why} |")
    tally = counts(rows)
    lines += ["", ", ".join(f"{tally[v]} {v.value}" for v in Verdict) + "."]
    return "\n".join(lines) + "\n"


def markdown_parts(result: ClaimResult) -> str:
    """Each part as '**holds**/**fails**/**not observed**: part (evidence)'."""
    if len(result.parts) <= 1:
        return result.summary
    return "<br>".join(f"**{p.mark}**: {p.part} ({p.evidence})" for p in result.parts)


def render_verdicts(console: Console, results: Iterable[ClaimResult]) -> None:
    """One line per claim, in ID order: the verdict at a glance."""
    from rich.markup import escape
    from rich.table import Table

    from framelab.experiments.claims import TEXTS

    table = Table(title="Verdicts", title_justify="left", show_edge=False)
    table.add_column("claim", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("what the notes say", ratio=1)
    table.add_column("experiment", no_wrap=True)
    for r in sorted(results, key=lambda r: (r.claim, r.experiment)):
        verdict = f"[{VERDICT_STYLES[r.verdict]}]{r.verdict.value}[/]"
        table.add_row(r.claim, verdict, escape(TEXTS.get(r.claim, "")), r.experiment)
    console.print(table)
