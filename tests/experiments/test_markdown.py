"""`--markdown`: the run's table, what differs and its pictures, in place in a README."""

from __future__ import annotations

from pathlib import Path

import pytest

from framelab.cli import main
from framelab.experiments import markdown
from framelab.experiments.result import ClaimResult, Verdict

RESULTS = [
    ClaimResult("sticky", "C17", Verdict.CONFIRMED, "10 sends came out of 1 recv()"),
    ClaimResult("mss", "C13", Verdict.DIFFERS, "the MSS follows the MTU: 65495 [on lo]"),
    ClaimResult("nagle", "C18", Verdict.CONFIRMED, "44.1 ms with Nagle vs 0.02 ms"),
]


def test_a_new_file_gets_the_table_what_differs_and_the_pictures(tmp_path: Path) -> None:
    path = tmp_path / "claims.md"
    chart = tmp_path / "pictures" / "nagle.png"
    assert markdown.write_markdown(path, RESULTS, [chart]) == "file"
    text = path.read_text()
    assert "| C13 |" in text and "| C17 |" in text
    [differs] = [line for line in text.splitlines() if line.startswith("- **")]
    assert differs == "- **C13** (mss, differs): the MSS follows the MTU: 65495 (on lo)"
    assert "![44.1 ms with Nagle vs 0.02 ms](pictures/nagle.png)" in text


def test_only_the_marked_region_of_a_readme_is_replaced(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\nintro\n{markdown.BEGIN}\nold table\n{markdown.END}\nafter\n")
    assert markdown.write_markdown(readme, RESULTS, []) == "region"
    text = readme.read_text()
    assert text.startswith("# Title\nintro\n") and text.endswith(f"{markdown.END}\nafter\n")
    assert "old table" not in text and "| C13 |" in text
    markdown.write_markdown(readme, RESULTS[:1], [])  # again: still one region, new content
    again = readme.read_text()
    assert again.count(markdown.BEGIN) == 1 and "| C13 |" not in again


def test_half_a_region_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"{markdown.BEGIN}\nno end marker\n")
    assert main(["experiment", "run", "sticky", "--markdown", str(readme)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "--markdown" in line and "not" in line and markdown.END in line
    assert readme.read_text() == f"{markdown.BEGIN}\nno end marker\n"
