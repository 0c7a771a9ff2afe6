"""`framelab sticky --plot`: the sticky-packet picture.

One panel per pattern, three bars over the same bytes: where the sends
began and ended, where the raw echo server's reads did, and the messages
the framed echo's client decoded. The first two disagree (merged, split);
the third matches the first again.
"""

from __future__ import annotations

from itertools import accumulate
from pathlib import Path
from typing import Any

from framelab.clients.sticky import Observation, StickyReport
from framelab.common.charts import pyplot, save

#: two shades per track, alternating, so neighbouring pieces stay apart
SHADES = {
    "sends": ("#1f77b4", "#aec7e8"),
    "reads": ("#ff7f0e", "#ffbb78"),
    "messages": ("#2ca02c", "#98df8a"),
}


def pieces(sizes: list[int]) -> list[tuple[int, int]]:
    """(start, length) of consecutive pieces of a byte stream."""
    starts = [0, *accumulate(sizes)][:-1]
    return list(zip(starts, sizes, strict=True))


def tracks(obs: Observation) -> list[tuple[str, str, list[int]]]:
    """(label, shade key, piece sizes), top to bottom."""
    decoded = obs.sends[: obs.framed_messages] if obs.framed_identical else []
    reads = obs.raw_server_reads
    return [
        (count(len(obs.sends), "send"), "sends", obs.sends),
        (count(len(reads), "read") + " by the raw echo", "reads", reads),
        (count(obs.framed_messages, "message") + " through framing", "messages", decoded),
    ]


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def draw_observation(ax: Any, obs: Observation) -> None:
    rows = tracks(obs)
    for y, (_, key, sizes) in enumerate(reversed(rows)):
        colours = [SHADES[key][i % 2] for i in range(len(sizes))]
        ax.broken_barh(pieces(sizes), (y - 0.35, 0.7), facecolors=colours, edgecolor="white")
    ax.set_yticks(range(len(rows)), [label for label, _, _ in reversed(rows)])
    from matplotlib.ticker import EngFormatter

    ax.set_xlim(0, max(sum(obs.sends), 1))
    ax.xaxis.set_major_formatter(EngFormatter(unit="B", sep=" "))
    ax.set_xlabel("byte offset in the stream")
    ax.set_title(f"{obs.pattern}: TCP delivers bytes, not messages", loc="left")


def write_sticky_chart(report: StickyReport, path: Path) -> Path:
    """Both patterns of `report` in one PNG at `path`."""
    fig, axes = pyplot().subplots(2, 1, figsize=(9, 4.8))
    for ax, obs in zip(axes, report.observations, strict=True):
        draw_observation(ax, obs)
    return save(fig, path)
