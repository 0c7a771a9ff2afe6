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
from framelab.common.words import plural

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
        (plural(len(obs.sends), "send"), "sends", obs.sends),
        (plural(len(reads), "read") + " by the raw echo", "reads", reads),
        (plural(obs.framed_messages, "message") + " through framing", "messages", decoded),
    ]


def binary_step(total: int, most: int = 8) -> int:
    """A tick step leaving at most `most` intervals: a power of two from 1 KiB
    on (so 1 MiB splits into 128 KiB pieces), 1-2-5 tens of bytes below it."""
    if total < 1024:
        steps: list[int] = [m * 10**e for e in range(4) for m in (1, 2, 5)]
        return next(step for step in steps if total / step <= most)
    step = 1024
    while total / step > most:
        step *= 2
    return step


def binary_size(value: int) -> str:
    """Byte offsets as the title counts them: 512 KiB, 1 MiB (never kB or MB)."""
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:g} {unit}"
    return f"{value} B"


def draw_observation(ax: Any, obs: Observation) -> None:
    rows = tracks(obs)
    for y, (_, key, sizes) in enumerate(reversed(rows)):
        colours = [SHADES[key][i % 2] for i in range(len(sizes))]
        ax.broken_barh(pieces(sizes), (y - 0.35, 0.7), facecolors=colours, edgecolor="white")
    ax.set_yticks(range(len(rows)), [label for label, _, _ in reversed(rows)])
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    total = max(sum(obs.sends), 1)
    ax.set_xlim(0, total)
    ax.xaxis.set_major_locator(MultipleLocator(binary_step(total)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: binary_size(int(value))))
    ax.set_xlabel("byte offset in the stream")
    ax.set_title(f"{obs.pattern}: TCP delivers bytes, not messages", loc="left")


def write_sticky_chart(report: StickyReport, path: Path) -> Path:
    """Both patterns of `report` in one PNG at `path`."""
    fig, axes = pyplot().subplots(2, 1, figsize=(9, 4.8))
    for ax, obs in zip(axes, report.observations, strict=True):
        draw_observation(ax, obs)
    return save(fig, path)
