"""The human report (rich) and the JSON file."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from framelab.experiments import report
from framelab.experiments.result import ClaimResult, Part, Verdict, judge, judge_parts, skipped


def results() -> list[ClaimResult]:
    return [
        judge(
            "demo",
            "C01",
            True,
            {"nested": {"flag": True, "none": None}, "sizes": list(range(10))},
            confirmed="it held [bold]really[/bold]",
            differs="-",
            trace=["0.1ms IP 127.0.0.1.1 > 127.0.0.1.2: Flags [P.], length 5"],
        ),
        skipped("demo", "C02", "needs root: capture"),
        judge("other", "C03", False, {}, confirmed="-", differs="saw something else"),
    ]


def rendered() -> str:
    out = io.StringIO()
    report.render(Console(file=out, width=200), results(), elapsed=1.25)
    return out.getvalue()


def test_every_experiment_gets_a_table_and_the_counts_come_last() -> None:
    text = rendered()
    assert text.index("demo") < text.index("other")
    assert text.rstrip().splitlines()[-1] == "1 confirmed, 0 partly, 1 differs, 1 skipped in 1.2 s"


def test_experiment_text_is_printed_as_is_never_as_markup() -> None:
    text = rendered()
    assert "Flags [P.]" in text  # a trace line, untouched
    assert "[bold]really[/bold]" in text


def test_observed_values_are_compact() -> None:
    text = report.compact_observed(results()[0].observed)
    assert "nested.flag: yes" in text and "nested.none: -" in text
    assert "sizes: [0, 1, 2, 3, 4, 5, ... (10 in all)]" in text


def test_long_observations_are_cut_unless_asked() -> None:
    observed = {f"key{i}": i for i in range(30)}
    short = report.compact_observed(observed, max_lines=5)
    assert len(short.splitlines()) == 5 and "26 more" in short
    assert len(report.compact_observed(observed, max_lines=None).splitlines()) == 30


def test_json_is_a_list_of_result_objects(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    report.write_json(path, results())
    data = json.loads(path.read_text())
    assert [r["claim"] for r in data] == ["C01", "C02", "C03"]
    assert data[1]["verdict"] == Verdict.SKIPPED.value
    assert data[0]["trace"] and data[0]["observed"]["nested"]["flag"] is True


def test_environment_names_kernel_python_and_privileges() -> None:
    env = report.environment()
    assert {"kernel", "python", "root"} <= set(env)
    line = report.environment_line(env)
    assert env["kernel"] in line and env["python"] in line


def test_markdown_table_has_one_row_per_claim_in_id_order() -> None:
    text = report.markdown_table(reversed(results()))
    rows = [line for line in text.splitlines() if line.startswith("| C")]
    assert [row.split("|")[1].strip() for row in rows] == ["C01", "C02", "C03"]
    assert "| skipped (demo) | needs root: capture |" in rows[1]
    assert "differs (other)" in rows[2] and "Ethernet MTU" in rows[0]
    assert text.startswith("Seen on ")


def compound() -> ClaimResult:
    return judge_parts(
        "demo",
        "C40",
        [
            Part("retransmitted", True, "6 retransmissions"),
            Part("aborted with a reset", False, "ETIMEDOUT, no RST on the wire"),
            Part("on a real NIC", None, "not observable on a veth because nothing pads"),
        ],
        {"rst_sent": False},
        expected={"abort_after_s": 1.5},
    )


def test_parts_are_shown_in_the_table_json_and_markdown(tmp_path: Path) -> None:
    out = io.StringIO()
    report.render(Console(file=out, width=200), [compound()])
    text = out.getvalue()
    assert "x aborted with a reset: ETIMEDOUT, no RST on the wire" in text
    assert "? on a real NIC" in text and "expected (kernel rules, not observed)" in text
    assert "0 confirmed, 1 partly" in text
    path = tmp_path / "out.json"
    report.write_json(path, [compound()])
    data = json.loads(path.read_text())[0]
    assert data["verdict"] == "partly"
    assert [p["holds"] for p in data["parts"]] == [True, False, None]
    assert data["expected"] == {"abort_after_s": 1.5} and data["observed"] == {"rst_sent": False}
    row = next(line for line in report.markdown_table([compound()]).splitlines() if "C40" in line)
    assert "**fails**: aborted with a reset (ETIMEDOUT, no RST on the wire)" in row
    assert "0 confirmed, 1 partly, 0 differs, 0 skipped." in report.markdown_table([compound()])
