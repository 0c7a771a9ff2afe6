"""PNG charts of a run: throughput against payload size, latency percentiles.

matplotlib is imported on first use (framelab.common.charts), with the Agg
backend: no screen needed.
"""

from __future__ import annotations

from pathlib import Path

from framelab.benchmarks.grid import human_size
from framelab.benchmarks.runner import Summary
from framelab.common.charts import pyplot, save


def write_charts(summaries: list[Summary], directory: Path) -> list[Path]:
    plt = pyplot()
    written = []
    targets = list(dict.fromkeys(s.target for s in summaries))
    depths = sorted({s.depth for s in summaries})

    fig, axes = plt.subplots(1, len(depths), figsize=(6.5 * len(depths), 4.8), squeeze=False)
    for ax, depth in zip(axes[0], depths, strict=True):
        for target in targets:
            points = sorted(
                (s.size, s.payload_mb_per_s)
                for s in summaries
                if s.target == target and s.depth == depth and s.ok
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=target)
        sizes = sorted({s.size for s in summaries if s.depth == depth})
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes, [human_size(s) for s in sizes])
        ax.set_xlabel("payload per frame")
        ax.set_ylabel("payload MB/s (echoed)")
        ax.set_title(f"throughput, {depth} frame(s) in flight per connection")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize="small")
    written.append(save(fig, directory / "throughput.png"))

    timed = [s for s in summaries if s.latency is not None and s.ok]
    sizes = sorted({s.size for s in timed})
    if timed:
        keys = ("p50_us", "p90_us", "p99_us", "p99.9_us")
        fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4.8), squeeze=False)
        for ax, size in zip(axes[0], sizes, strict=True):
            rows = [s for s in timed if s.size == size]
            width = 0.8 / len(keys)
            for i, key in enumerate(keys):
                values = [s.latency[key] if s.latency else 0 for s in rows]
                positions = [j + (i - 1.5) * width for j in range(len(rows))]
                ax.bar(positions, values, width, label=key.replace("_us", ""))
            ax.set_xticks(range(len(rows)), [s.target for s in rows], rotation=35, ha="right")
            ax.set_yscale("log")
            ax.set_ylabel("µs per request")
            ax.set_title(f"latency, {human_size(size)}, D=1")
            ax.grid(True, axis="y", which="both", alpha=0.3)
        axes[0][0].legend(fontsize="small")
        written.append(save(fig, directory / "latency.png"))
    return written
