"""The run engine: select experiments, run each on its own, collect results, write outputs.

Used by `framelab experiment run` and `framelab demo`; knows nothing of
argparse. Every option reaches it as data: the `RunContext` every
experiment receives (see context.py for how to add a field), and the
`Outputs` written after the run.

An experiment that raises, or whose module fails to import, does not stop
the others: its claims are reported as skipped, with the exception, and the
batch records it as failed. After the run, network namespaces an
experiment left behind are reported (there should never be any).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from framelab.experiments.context import RunContext
from framelab.experiments.pcap_export import RunCaptures
from framelab.experiments.registry import EXPERIMENT_MODULES, Experiment, expand, load
from framelab.experiments.result import ClaimResult, Verdict, skipped
from framelab.lab.capture import recording

if TYPE_CHECKING:
    from rich.console import Console

ALL = "all"


class UnknownExperiment(ValueError):
    """A name that is neither a registered experiment nor 'all'."""

    def __init__(self, unknown: Sequence[str]) -> None:
        self.unknown = list(unknown)
        known = ", ".join([*EXPERIMENT_MODULES, ALL])
        super().__init__(f"unknown experiment(s): {', '.join(unknown)}; known: {known}")


def select(names: Iterable[str]) -> list[str]:
    """'all' -> every registered experiment, an alias -> its experiments; duplicates dropped.

    Raises UnknownExperiment naming every name the registry does not know.
    """
    selected: list[str] = []
    for name in names:
        for item in EXPERIMENT_MODULES if name == ALL else expand(name):
            if item not in selected:
                selected.append(item)
    unknown = [name for name in selected if name not in EXPERIMENT_MODULES]
    if unknown:
        raise UnknownExperiment(unknown)
    return selected


@dataclass(frozen=True)
class Loaded:
    """A registered experiment, imported, or the reason its module could not be."""

    name: str
    experiment: Experiment | None = None
    problem: str | None = None


def load_experiment(name: str) -> Loaded:
    """Import experiments.<name>; an import that raises becomes `problem`, not an exception."""
    try:
        return Loaded(name, load(name))
    except Exception as exc:
        return Loaded(name, problem=f"import failed: {describe(exc)}")


def describe(exc: BaseException) -> str:
    """'ValueError: text (at module.py:42)': the exception and where it was raised."""
    text = f"{type(exc).__name__}: {exc}"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        text += f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})"
    return text


@dataclass
class Batch:
    """What one run produced, and what went wrong around it."""

    results: list[ClaimResult] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # raised, or could not be imported
    leftover_namespaces: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    #: the packet captures each experiment made, for pcap files and the report
    captures: RunCaptures = field(default_factory=RunCaptures)


def run_one(loaded: Loaded, ctx: RunContext) -> tuple[list[ClaimResult], bool]:
    """(results, ok): an experiment that raises gets its claims skipped, with the reason."""
    if loaded.experiment is None:
        return [ClaimResult(loaded.name, "?", Verdict.SKIPPED, str(loaded.problem))], False
    experiment = loaded.experiment
    try:
        return experiment.run(ctx), True
    except Exception as exc:
        why = f"the experiment raised {describe(exc)}"
        return [skipped(experiment.name, claim, why) for claim in experiment.claims], False


def execute(
    names: Sequence[str], ctx: RunContext, progress: bool = True, console: Console | None = None
) -> Batch:
    """Run the selected experiments one after the other, with a progress display."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    batch = Batch()
    started = time.monotonic()
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    from framelab.lab.netns import run_settings, settings_namespace

    with (
        Progress(*columns, console=console, transient=True, disable=not progress) as bar,
        settings_namespace(ctx.sysctls),
    ):
        where = run_settings(ctx.sysctls, ctx.mtu)
        task = bar.add_task("experiments", total=len(names))
        for name in names:
            loaded = load_experiment(name)
            claims = ", ".join(loaded.experiment.claims) if loaded.experiment else "?"
            bar.update(task, description=f"{name} ({claims})")
            with recording() as captures:
                results, ok = run_one(loaded, ctx)
            batch.captures.add(name, captures)
            for result in results:
                result.context.setdefault("run", where)
            batch.results += results
            if not ok:
                batch.failed.append(name)
            bar.advance(task)
    batch.leftover_namespaces = leftover_namespaces()
    batch.elapsed = time.monotonic() - started
    return batch


def leftover_namespaces() -> list[str]:
    """Namespaces experiments made and did not remove ([] when `ip` is missing)."""
    from framelab.lab.netns import leftover_namespaces as find

    try:
        return find()
    except OSError:
        return []


def report(console: Console, batch: Batch, *, verbose: bool = False) -> None:
    """Tables, traces, counts; then what failed and what was left behind.

    `verbose` shows every observed value instead of the first few.
    """
    from rich.text import Text

    from framelab.experiments.report import OBSERVED_LINES, render

    render(
        console,
        batch.results,
        elapsed=batch.elapsed,
        max_lines=None if verbose else OBSERVED_LINES,
    )
    if batch.failed:
        console.print(
            Text(f"raised an exception: {', '.join(batch.failed)} (see above)", style="bold red")
        )
    if batch.leftover_namespaces:
        names = " ".join(batch.leftover_namespaces)
        console.print(
            Text(
                f"warning: network namespaces left behind: {names} (remove: ip netns del NAME)",
                style="bold red",
            )
        )


@dataclass(frozen=True)
class Outputs:
    """Files a run writes after it ends; None: not asked for.

    A new output (say an HTML report) is a field here and a step in
    `write_outputs()`, which receives every result of the run.
    """

    json: Path | None = None
    markdown: Path | None = None
    charts: Path | None = None
    pcap: Path | None = None  # a directory: one pcap file per claim
    html: Path | None = None  # the self-contained report


def write_outputs(console: Console, batch: Batch, outputs: Outputs) -> list[Path]:
    """Write what `outputs` asks for, say where on `console`; the paths written."""
    from rich.text import Text

    from framelab.experiments.report import write_json

    written: list[Path] = []
    if outputs.json:
        write_json(outputs.json, batch.results)
        console.print(Text(f"JSON written to {outputs.json}"))
        written.append(outputs.json)
    charts: list[Path] = []
    if outputs.charts:
        from framelab.experiments.plot import write_charts

        charts = write_charts(batch.results, outputs.charts)
        console.print(Text(f"charts: {', '.join(map(str, charts)) or 'none for these claims'}"))
        written += charts
    if outputs.markdown:  # after the charts: it links the ones this run drew
        from framelab.experiments.markdown import write_markdown

        where = write_markdown(outputs.markdown, batch.results, charts)
        inside = "its marked region of " if where == "region" else ""
        console.print(Text(f"Markdown written to {inside}{outputs.markdown}"))
        written.append(outputs.markdown)
    from framelab.experiments.evidence import write_evidence

    chart_files = [path for path in written if path.suffix == ".png"]
    written += write_evidence(
        console, batch.results, batch.captures,
        pcap_dir=outputs.pcap, html=outputs.html, chart_files=chart_files,
    )  # fmt: skip
    # (write_evidence also saves the results as the last run, for framelab sysctl)
    return written


def run_experiments(
    names: Sequence[str],
    ctx: RunContext,
    progress: bool = True,
    *,
    console: Console | None = None,
    show: bool = True,
) -> list[ClaimResult]:
    """Run `names` ('all' allowed) and, when `show`, print the report; the results.

    For commands built on this one (`framelab demo`): an experiment that
    raises is reported with skipped results, never raised from here.
    """
    if console is None:
        from rich.console import Console

        console = Console()
    batch = execute(select(names), ctx, progress, console)
    if show:
        report(console, batch)
    return batch.results


def list_experiments(console: Console) -> None:
    """A table of every registered experiment: claims, root needed, what it does."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Experiments", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("claims", min_width=9)
    table.add_column("needs root", no_wrap=True)
    table.add_column("description", ratio=1)
    for name in EXPERIMENT_MODULES:
        loaded = load_experiment(name)
        experiment = loaded.experiment
        if experiment is None:
            table.add_row(name, "-", "-", Text(str(loaded.problem), style="red"))
        else:
            table.add_row(
                name, ", ".join(experiment.claims), experiment.needs_root, experiment.description
            )
    console.print(table)
