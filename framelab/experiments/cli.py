"""`framelab experiment`: list the experiments, run them, report, write JSON.

    framelab experiment list
    framelab experiment run sticky nagle --quick
    framelab experiment run all --json results.json
    framelab experiment run nagle retransmission --plot charts/

Each experiment runs on its own: one that raises does not stop the others.
Its claims are reported as skipped, with the exception, and the exit status
is 1 (only then: `differs` is an answer, not a failure). A module the
registry names but that does not exist yet is shown as "not available" and
left out of `all`. After the run, network namespaces an experiment left
behind are reported (there should never be any).

`run_experiments()` is the same run for other commands (`framelab demo`).
"""

from __future__ import annotations

import argparse
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from framelab.common.argtypes import positive_int
from framelab.experiments.context import RunContext
from framelab.experiments.registry import EXPERIMENT_MODULES, Experiment, load
from framelab.experiments.result import ClaimResult, Verdict, skipped

if TYPE_CHECKING:
    from rich.console import Console

NOT_AVAILABLE = "not available"
#: rounds for timings in --quick mode (unless --rounds says otherwise)
QUICK_ROUNDS = 3


@dataclass
class Loaded:
    """An experiment module as the registry names it: loaded, missing, or broken."""

    name: str
    experiment: Experiment | None = None
    problem: str | None = None  # NOT_AVAILABLE or "import failed: ..."

    @property
    def available(self) -> bool:
        return self.problem != NOT_AVAILABLE


def load_experiment(name: str) -> Loaded:
    """Import experiments.<name>; a module that does not exist is "not available"."""
    try:
        return Loaded(name, load(name))
    except ModuleNotFoundError as exc:
        if exc.name == f"framelab.experiments.{name}":
            return Loaded(name, problem=NOT_AVAILABLE)
        return Loaded(name, problem=f"import failed: {describe(exc)}")
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
    unavailable: list[str] = field(default_factory=list)
    leftover_namespaces: list[str] = field(default_factory=list)
    elapsed: float = 0.0


def expand(names: Iterable[str]) -> list[str]:
    """'all' -> every registered module; duplicates dropped, order kept."""
    expanded: list[str] = []
    for name in names:
        for item in EXPERIMENT_MODULES if name == "all" else [name]:
            if item not in expanded:
                expanded.append(item)
    return expanded


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
    """Run the named experiments one after the other, with a progress display."""
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
    with Progress(*columns, console=console, transient=True, disable=not progress) as bar:
        task = bar.add_task("experiments", total=len(names))
        for name in names:
            loaded = load_experiment(name)
            if not loaded.available:
                batch.unavailable.append(name)
                bar.advance(task)
                continue
            claims = ", ".join(loaded.experiment.claims) if loaded.experiment else "?"
            bar.update(task, description=f"{name} ({claims})")
            results, ok = run_one(loaded, ctx)
            batch.results += results
            if not ok:
                batch.failed.append(name)
            bar.advance(task)
    batch.leftover_namespaces = leftover_namespaces()
    batch.elapsed = time.monotonic() - started
    return batch


def leftover_namespaces() -> list[str]:
    """Namespaces experiments made and did not remove ([] when `ip` is missing)."""
    from framelab.experiments.netns import leftover_namespaces as find

    try:
        return find()
    except OSError:
        return []


def report(console: Console, batch: Batch, *, verbose: bool = False) -> None:
    """Tables, traces, counts; then what was not run and what was left behind.

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
    if batch.unavailable:
        console.print(Text(f"{NOT_AVAILABLE}: {', '.join(batch.unavailable)}", style="grey50"))
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
    batch = execute(expand(names), ctx, progress, console)
    if show:
        report(console, batch)
    return batch.results


# -- the subcommand -------------------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the experiments, their claims, and whether they need root")
    run_parser = actions.add_parser(
        "run", help="run experiments and report a verdict per claim", description=__doc__
    )
    run_parser.formatter_class = argparse.RawDescriptionHelpFormatter
    run_parser.add_argument("names", nargs="+", metavar="NAME", help="experiments to run, or 'all'")
    run_parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    run_parser.add_argument(
        "--markdown", type=Path, metavar="PATH", help="write the claims table as Markdown"
    )
    run_parser.add_argument(
        "--plot",
        type=Path,
        metavar="DIR",
        help="write PNG charts into DIR (nagle.png, retransmission.png) where the run allows",
    )
    run_parser.add_argument(
        "--quick", action="store_true", help=f"fewer rounds (default {QUICK_ROUNDS})"
    )
    run_parser.add_argument(
        "--rounds", type=positive_int, metavar="N", help="repetitions of each timed step"
    )
    run_parser.add_argument(
        "-v", "--verbose", action="store_true", help="show every observed value, not the first few"
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    if args.action == "list":
        list_experiments(console)
        return 0
    return run_command(args, console)


def run_command(args: argparse.Namespace, console: Console) -> int:
    """0 when every experiment ran (whatever the verdicts), 1 if one raised, 2 on bad names."""
    from rich.text import Text

    from framelab.experiments.report import markdown_table, render_environment, write_json

    names = expand(args.names)
    unknown = [n for n in names if n not in EXPERIMENT_MODULES]
    if unknown:
        console.print(
            Text(
                f"unknown experiment(s): {', '.join(unknown)}; "
                f"known: {', '.join(EXPERIMENT_MODULES)}, all",
                style="red",
            )
        )
        return 2
    explicit = [n for n in args.names if n != "all"]
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else RunContext().rounds)
    ctx = RunContext(rounds=rounds, quick=args.quick)
    render_environment(console)
    batch = execute(names, ctx, progress=True, console=console)
    report(console, batch, verbose=args.verbose)
    if args.json:
        write_json(args.json, batch.results)
        console.print(Text(f"JSON written to {args.json}"))
    if args.markdown:
        args.markdown.write_text(markdown_table(batch.results))
        console.print(Text(f"Markdown written to {args.markdown}"))
    if args.plot:
        from framelab.experiments.plot import write_charts

        charts = write_charts(batch.results, args.plot)
        console.print(Text(f"charts: {', '.join(map(str, charts)) or 'none for these claims'}"))
    missing = [n for n in batch.unavailable if n in explicit]
    return 1 if batch.failed or missing else 0


def list_experiments(console: Console) -> None:
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
            table.add_row(name, "-", "-", Text(str(loaded.problem), style="grey50"))
        else:
            table.add_row(
                name, ", ".join(experiment.claims), experiment.needs_root, experiment.description
            )
    console.print(table)
