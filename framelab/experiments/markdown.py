"""`--markdown PATH`: the claims table, what differs, and the run's pictures, as Markdown.

Everything written comes from one run: the environment line, the table
(report.markdown_table), a list of the claims that did not simply hold with
this run's own words, and the charts the same run drew (`--plot DIR`),
linked relative to PATH with the run's summaries as their text. When PATH
already holds a region between BEGIN and END, only that region is replaced,
so a README regenerates its experiment section in place from one command.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from framelab.experiments.report import markdown_table
from framelab.experiments.result import ClaimResult, Verdict

BEGIN = "<!-- framelab experiment run --markdown: begin -->"
END = "<!-- framelab experiment run --markdown: end -->"
#: longest image text taken from a run's summaries
ALT_LENGTH = 300


class MarkdownRegionError(ValueError):
    """PATH has a BEGIN marker without its END (or the other way round)."""


def run_markdown(results: Sequence[ClaimResult], charts: Sequence[Path], base: Path) -> str:
    """The whole generated text; chart links are relative to the folder `base`."""
    parts = [markdown_table(results)]
    different = [r for r in results if r.verdict in (Verdict.DIFFERS, Verdict.PARTLY)]
    if different:
        parts.append("What did not simply hold on this kernel:\n")
        parts.append(
            "".join(
                f"- **{r.claim}** ({r.experiment}, {r.verdict.value}): {one_line(shortfall(r))}\n"
                for r in sorted(different, key=lambda r: r.claim)
            )
        )
    for chart in charts:
        text = shorten(one_line(picture_text(chart, results)), ALT_LENGTH)
        link = Path(os.path.relpath(chart, base)).as_posix()
        parts.append(f"![{text}]({link})\n")
    return "\n".join(parts)


def shortfall(result: ClaimResult) -> str:
    """What kept a claim from holding: its parts that failed or were not observed."""
    missing = [p for p in result.parts if p.holds is not True]
    if len(result.parts) <= 1 or not missing:
        return result.summary
    return "; ".join(f"{p.mark}: {p.part} ({p.evidence})" for p in missing)


def shorten(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."


def picture_text(chart: Path, results: Sequence[ClaimResult]) -> str:
    """The summaries of the experiment a chart belongs to (its file is named after it)."""
    own = [r.summary for r in results if r.experiment == chart.stem and r.summary]
    return "; ".join(own) or chart.stem


def one_line(text: str) -> str:
    return " ".join(text.replace("[", "(").replace("]", ")").split())


def check_region(path: Path) -> bool:
    """Whether `path` has a region to replace; MarkdownRegionError if only half of one.

    Called before a run, so a broken file is reported before minutes are spent.
    """
    existing = path.read_text() if path.is_file() else ""
    has_begin, has_end = BEGIN in existing, END in existing
    if has_begin != has_end:
        missing = END if has_begin else BEGIN
        raise MarkdownRegionError(f"{path} has one marker of its region but not {missing}")
    return has_begin


def write_markdown(path: Path, results: Sequence[ClaimResult], charts: Sequence[Path]) -> str:
    """Write the run's Markdown to `path`, in its region if it has one: 'region' or 'file'."""
    generated = run_markdown(results, charts, path.parent)
    if not check_region(path):
        path.write_text(generated)
        return "file"
    head, rest = path.read_text().split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{generated}{END}{tail}")
    return "region"
