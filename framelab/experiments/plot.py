"""PNG charts for the claims whose numbers read better as a picture.

- nagle.png (C36, C18): the write-write-read round trip with Nagle on next
  to each remedy, on a log scale: a 40 ms stall against tens of microseconds.
- retransmission.png (C40): one unacknowledged segment's transmissions on a
  time line: a tail loss probe, then the retransmission timer, each gap
  twice the one before, until the connection is aborted.

Drawn from ClaimResult.observed only, so a saved --json run can be drawn
again; a claim that was skipped (or is missing) draws nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from framelab.common.charts import pyplot, save
from framelab.experiments.result import ClaimResult, Verdict

#: draws one chart on a matplotlib Axes (Any: matplotlib is untyped here)
Drawing = Callable[[Any], None]
#: a round trip this slow was held back by Nagle and a delayed ACK
STALL_MS = 10.0
STALL_COLOUR, PROMPT_COLOUR = "#d62728", "#2ca02c"

#: (key in C36's observed, label), in the order drawn
NAGLE_MODES = (
    ("nagle", "Nagle on: write, write, read"),
    ("nodelay", "TCP_NODELAY"),
    ("one_write", "Nagle on, one write"),
    ("quickack", "Nagle on, peer TCP_QUICKACK"),
    ("cork", "TCP_CORK, then uncork"),
)


def write_charts(results: list[ClaimResult], directory: Path) -> list[Path]:
    """The charts the results allow, written into `directory`; their paths."""
    observed = {r.claim: r.observed for r in results if r.verdict is not Verdict.SKIPPED}
    charts = []
    if "C36" in observed:
        charts.append(("nagle.png", nagle_bars(observed["C36"])))
    if "C40" in observed and observed["C40"].get("retransmit_gaps_ms"):
        charts.append(("retransmission.png", retransmission_timeline(observed["C40"])))
    if not charts:
        return []
    plt = pyplot()
    written = []
    for name, draw in charts:
        fig, ax = plt.subplots(figsize=(9, 4.2))
        draw(ax)
        written.append(save(fig, directory / name))
    return written


def nagle_rows(seen: dict[str, Any]) -> list[tuple[str, float]]:
    """(label, median round trip in ms) for every mode the run measured."""
    rows = [(label, seen[key]["median_ms"]) for key, label in NAGLE_MODES if key in seen]
    for loop, data in seen.get("event_loops", {}).items():
        rows.append((f"{loop}, its default", data["default_median_ms"]))
        rows.append((f"{loop}, TCP_NODELAY cleared", data["nodelay_cleared_median_ms"]))
    return rows


def nagle_bars(seen: dict[str, Any]) -> Drawing:
    rows = nagle_rows(seen)

    def draw(ax: Any) -> None:
        labels = [label for label, _ in rows][::-1]
        values = [max(ms, 1e-3) for _, ms in rows][::-1]
        colours = [STALL_COLOUR if ms >= STALL_MS else PROMPT_COLOUR for ms in values]
        ax.barh(labels, values, color=colours)
        for y, ms in enumerate(values):
            ax.text(ms * 1.15, y, f"{ms:g} ms", va="center", fontsize="small")
        ax.set_xscale("log")
        ax.set_xlim(right=max(values) * 12)
        ax.set_xlabel("median round trip, ms (log scale)")
        ax.set_title(
            "write, write, read on loopback: Nagle and the delayed ACK (C18, C36)", loc="right"
        )
        ax.grid(True, axis="x", which="both", alpha=0.3)

    return draw


def transmission_times(seen: dict[str, Any]) -> list[float]:
    """ms after the first transmission: 0, then one time per retransmission."""
    times = [0.0]
    for gap in seen["retransmit_gaps_ms"]:
        times.append(times[-1] + gap)
    return times


def retransmission_timeline(seen: dict[str, Any]) -> Drawing:
    times = transmission_times(seen)
    gaps = seen["retransmit_gaps_ms"]
    abort = seen.get("abort_after_ms")

    def draw(ax: Any) -> None:
        ax.vlines(times, 0, 1, colors="#1f77b4", linewidth=2)
        ax.plot(times, [1] * len(times), "o", color="#1f77b4", label="segment sent")
        for start, gap in zip(times, gaps, strict=False):
            ax.annotate(
                "", xy=(start + gap, 0.5), xytext=(start, 0.5),
                arrowprops={"arrowstyle": "<->", "color": "grey"},
            )  # fmt: skip
            ax.text(start + gap / 2, 0.56, f"{gap:.0f} ms", ha="center", fontsize="small")
        probe = seen.get("counters", {}).get("TcpExt.TCPLossProbes") == 1
        for i, at in enumerate(times):
            why = "first send" if i == 0 else "probe" if probe and i == 1 else "timer"
            ax.text(at, 1.06, why, ha="center", fontsize="x-small")
        if abort is not None:
            label = f"{seen.get('error')} after {abort:.0f} ms"
            if seen.get("user_timeout_ms"):
                label += f" (TCP_USER_TIMEOUT {seen['user_timeout_ms']} ms)"
            ax.axvline(abort, color=STALL_COLOUR, linestyle="--", label=label)
        ax.set_ylim(0, 1.3)
        ax.set_yticks([])
        ax.set_xlabel("ms after the first transmission")
        ax.set_title("every segment lost: a probe, the timer doubling, the abort (C40)")
        ax.legend(loc="lower right", fontsize="small")

    return draw
