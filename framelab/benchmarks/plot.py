"""PNG charts of a run: frames/s per case, latency percentiles per size.

Drawn as small multiples, one panel per case, because cases differ in more
than the payload size (depth D and connection count C too): a line through
them would join measurements that are not comparable.
- throughput.png: per case (size, D, C) a horizontal bar per server, frames/s
  on a linear axis from 0 (the median; the whisker spans the rounds' min-max),
  servers in the same order and colour family in every panel;
- latency.png: per size at D = 1, a row per server with p50, p99 and p99.9
  as marks on one line (a log axis has no baseline, so no bars that start
  nowhere), ticks written as plain numbers.
Names read horizontally, so ten of them never collide. matplotlib is
imported on first use (framelab.common.charts), Agg backend: no screen.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

from framelab.benchmarks.grid import human_size
from framelab.benchmarks.runner import Summary
from framelab.common.charts import pyplot, save

#: a colour per kind of server, the same in every panel
KIND_COLOURS = {"raw": "#8c8c8c", "framed": "#1f77b4", "msgpack": "#ff7f0e", "peer": "#2ca02c"}
OTHER_COLOUR = "#9467bd"
#: percentile key in Summary.latency -> (label, marker, colour)
PERCENTILES = (
    ("p50_us", "p50", "o", "#1f77b4"),
    ("p99_us", "p99", "s", "#ff7f0e"),
    ("p99.9_us", "p99.9", "^", "#d62728"),
)
PANEL_COLUMNS = 3


def case_title(s: Summary) -> str:
    return f"{human_size(s.size)}, D={s.depth}, C={s.connections}"


def plain_number(value: float, _position: Any = None) -> str:
    """Tick labels as a reader writes them: 200, 2.5 k, 1.2 M (never 2x10^2)."""
    if value >= 1e6:
        return f"{value / 1e6:g} M"
    if value >= 1e3:
        return f"{value / 1e3:g} k"
    return f"{value:,.0f}" if value >= 1 else f"{value:g}"


def title(fig: Any, text: str) -> None:
    """A figure title wrapped to the figure's width (a one-panel chart is narrow)."""
    width_in_characters = int(fig.get_figwidth() * 11)
    fig.suptitle(textwrap.fill(text, width_in_characters), fontsize="medium")


def write_charts(summaries: list[Summary], directory: Path) -> list[Path]:
    written = [write_throughput(summaries, directory / "throughput.png")]
    latency = write_latency(summaries, directory / "latency.png")
    if latency is not None:
        written.append(latency)
    return written


def _grid(count: int, panel_width: float, panel_height: float) -> tuple[Any, list[Any]]:
    columns = 2 if count == 4 else min(PANEL_COLUMNS, count)
    rows = math.ceil(count / columns)
    fig, axes = pyplot().subplots(
        rows,
        columns,
        figsize=(panel_width * columns + 1.6, panel_height * rows + 0.9),
        squeeze=False,
        sharey=True,
        layout="constrained",  # room for the title and the legend outside the panels
    )
    flat = [ax for row in axes for ax in row]
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def write_throughput(summaries: list[Summary], path: Path) -> Path:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    targets = list(dict.fromkeys(s.target for s in summaries))
    kinds = {s.target: s.kind for s in summaries}
    cases = list(dict.fromkeys((s.size, s.depth, s.connections) for s in summaries))
    fig, axes = _grid(len(cases), 3.6, 0.28 * len(targets) + 1.0)
    for ax, case in zip(axes, cases, strict=True):
        cells = {s.target: s for s in summaries if (s.size, s.depth, s.connections) == case}
        rows = range(len(targets))
        for row, target in zip(rows, targets, strict=True):
            cell = cells.get(target)
            if cell is None or not cell.ok:
                ax.text(0, row, " not measured", va="center", fontsize="small", color="#b00")
                continue
            rounds = cell.per_round_frames_per_s or [cell.frames_per_s]
            low, high = min(rounds), max(rounds)
            ax.barh(
                row,
                cell.frames_per_s,
                height=0.7,
                color=KIND_COLOURS.get(kinds[target], OTHER_COLOUR),
                xerr=[[max(cell.frames_per_s - low, 0)], [max(high - cell.frames_per_s, 0)]],
                error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#333"},
            )
        ax.set_yticks(list(rows), targets)
        ax.set_xlim(left=0)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.xaxis.set_major_formatter(FuncFormatter(plain_number))
        ax.set_title(case_title(cells[next(iter(cells))]), fontsize="medium")
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].invert_yaxis()  # the y axis is shared: the first server on top, once
    for ax in axes:
        ax.set_xlabel("frames/s echoed")
    title(
        fig,
        "Throughput per case (median; whisker: min-max of the rounds). "
        "D: frames in flight per connection, C: connections",
    )
    return save(fig, path)


def write_latency(summaries: list[Summary], path: Path) -> Path | None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    timed = [s for s in summaries if s.latency is not None and s.ok]
    if not timed:
        return None
    targets = list(dict.fromkeys(s.target for s in timed))
    cases = list(dict.fromkeys((s.size, s.depth, s.connections) for s in timed))
    fig, axes = _grid(len(cases), 3.6, 0.28 * len(targets) + 1.0)
    for ax, case in zip(axes, cases, strict=True):
        cells = {s.target: s for s in timed if (s.size, s.depth, s.connections) == case}
        for row, target in enumerate(targets):
            cell = cells.get(target)
            if cell is None or cell.latency is None:
                continue
            values = [cell.latency[key] for key, _, _, _ in PERCENTILES]
            ax.plot(values, [row] * len(values), color="#bbb", linewidth=1.5, zorder=1)
            for value, (_, label, marker, colour) in zip(values, PERCENTILES, strict=True):
                ax.scatter(value, row, marker=marker, s=28, zorder=2, color=colour, label=label)
        ax.set_yticks(range(len(targets)), targets)
        ax.set_xscale("log")
        values = [
            v for c in cells.values() if c.latency for k, *_ in PERCENTILES for v in [c.latency[k]]
        ]
        decades = math.log10(max(values) / max(min(values), 1e-9))
        subs = (1.0,) if decades > 1.5 else (1.0, 2.0, 5.0)  # a few labels, never crowded
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
        ax.xaxis.set_major_formatter(FuncFormatter(plain_number))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(case_title(cells[next(iter(cells))]), fontsize="medium")
        ax.grid(True, axis="x", which="major", alpha=0.3)
    axes[0].invert_yaxis()
    for ax in axes:
        ax.set_xlabel("µs per request")
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    fig.legend(
        list(unique.values()),
        list(unique),
        loc="outside lower center",
        ncol=len(unique),
        fontsize="small",
        frameon=False,
    )
    title(fig, "Latency at D = 1 (one request in flight)")
    return save(fig, path)
