"""`--plot DIR`: the charts the experiments declare, drawn from a run's results.

Each experiment owns its pictures (`Experiment.charts`): this module only
hands each experiment its results, lays out the figure and writes the PNG.
Drawn from ClaimResult values alone, so a saved --json run can be drawn
again; skipped claims are left out, and a chart its results do not allow
is not written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from framelab.common.charts import pyplot, save
from framelab.experiments.registry import EXPERIMENT_MODULES, Experiment, load
from framelab.experiments.result import ClaimResult, Verdict


def write_charts(
    results: Sequence[ClaimResult],
    directory: Path,
    experiments: Sequence[Experiment] | None = None,
) -> list[Path]:
    """The charts the results allow, written into `directory`; their paths.

    `experiments`: whose charts to draw (default: the registered ones that
    have results here).
    """
    if experiments is None:
        present = {r.experiment for r in results}
        experiments = [load(name) for name in EXPERIMENT_MODULES if name in present]
    written: list[Path] = []
    for experiment in experiments:
        own = [
            r
            for r in results
            if r.experiment == experiment.name and r.verdict is not Verdict.SKIPPED
        ]
        for chart in experiment.charts:
            draw = chart.draw(own) if own else None
            if draw is None:
                continue
            fig, ax = pyplot().subplots(figsize=chart.size)
            draw(ax)
            written.append(save(fig, directory / chart.filename))
    return written
