"""The files a run leaves for people and tools: pcaps per claim, the HTML report, the last run.

The run engine calls `write_evidence()` after a run with the results and
the captures each experiment made; this module decides the file names and
says on the console where everything went, one line each. The report links
the pcaps written in the same call and embeds the charts (drawn here when
matplotlib is installed; without it the report simply has none).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from framelab.common import last_run
from framelab.experiments.claims import CLAIMS
from framelab.experiments.context import running_as_root
from framelab.experiments.pcap_export import RunCaptures, write_pcaps
from framelab.experiments.result import ClaimResult

if TYPE_CHECKING:
    from rich.console import Console


def kernel_settings() -> list[tuple[str, str | None]]:
    """(name, live value) of every setting `framelab sysctl` explains."""
    from framelab.sysctl.explain import live_value
    from framelab.sysctl.params import PARAMS

    return [(p.name, live_value(p)) for p in PARAMS]


def write_evidence(
    console: Console,
    results: Sequence[ClaimResult],
    captures: RunCaptures,
    *,
    pcap_dir: Path | None = None,
    html: Path | None = None,
    chart_files: Sequence[Path] = (),
) -> list[Path]:
    """Write what was asked for, save the results as the last run; the paths written."""
    from rich.text import Text

    written: list[Path] = []
    pcaps: dict[str, Path] = {}
    if pcap_dir is not None:
        pcaps = write_pcaps(pcap_dir, results, captures)
        written += pcaps.values()
        if pcaps:
            claims = sum(1 for name in pcaps if name in CLAIMS)
            rest = len(pcaps) - claims
            more = f", and {rest} of other packets, by experiment" if rest else ""
            console.print(Text(f"pcap files: {claims} by claim{more}, in {pcap_dir}/"))
        else:
            why = (
                "no experiment of this run captures" if running_as_root() else "captures need root"
            )
            console.print(Text(f"pcap files: none ({why})"))
    if html is not None:
        written.append(_report(html, results, pcaps, chart_files))
        console.print(Text(f"report: {html.resolve()}", style="bold"))
    saved = last_run.save(results)
    if saved is not None:
        written.append(saved)
    return written


def _report(
    html: Path, results: Sequence[ClaimResult], pcaps: dict[str, Path], chart_files: Sequence[Path]
) -> Path:
    from framelab.experiments.html_report import write_report
    from framelab.experiments.report import environment

    as_json = [r.to_json() for r in results]
    with tempfile.TemporaryDirectory() as scratch:
        charts = list(chart_files) or _draw_charts(results, Path(scratch))
        return write_report(
            html, as_json, environment=environment(), settings=kernel_settings(),
            pcaps=pcaps, chart_files=charts,
        )  # fmt: skip


def _draw_charts(results: Sequence[ClaimResult], directory: Path) -> list[Path]:
    from framelab.common.charts import ChartsUnavailable
    from framelab.experiments.plot import write_charts

    try:
        return write_charts(list(results), directory)
    except ChartsUnavailable:
        return []
