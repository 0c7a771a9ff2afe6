"""C26 on this kernel: a dead process's socket ends with FIN, or with RST when
data was unread, and not at all while a forked copy still holds it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from framelab.experiments import process_kill
from framelab.experiments.context import RunContext
from framelab.experiments.result import ClaimResult, Verdict


def own_children() -> list[str]:
    """Pids of this process's children (every thread's), from /proc."""
    tasks = Path(f"/proc/{os.getpid()}/task")
    return [pid for task in tasks.iterdir() for pid in (task / "children").read_text().split()]


@pytest.fixture(scope="module")
def result() -> ClaimResult:
    before = own_children()
    [claim] = process_kill.run(RunContext(rounds=2, quick=True))
    assert own_children() == before  # every child killed and reaped
    return claim


def case(result: ClaimResult, name: str) -> dict[str, Any]:
    data: dict[str, Any] = result.observed[name]
    return data


@pytest.mark.kernel
def test_sigkill_and_exit_close_the_socket_with_fin(result: ClaimResult) -> None:
    for name in ("sigkill", "exit_without_close"):
        assert case(result, name)["our_recv"] == "EOF"
        assert case(result, name)["same_every_round"]
    assert case(result, "sigkill")["ms_to_recv_result_median"] < 500
    # without a capture the FIN part is not observed, so the claim is only partly shown
    captured = result.observed["captured"]
    assert result.verdict is (Verdict.CONFIRMED if captured else Verdict.PARTLY)


@pytest.mark.kernel
def test_sigkill_with_unread_data_sends_rst(result: ClaimResult) -> None:
    unread = case(result, "sigkill_with_unread_data")
    assert unread["our_recv"] == "ECONNRESET"
    assert unread["child_end_after"] is None  # aborted: no FIN_WAIT, no TIME_WAIT


@pytest.mark.kernel
def test_a_forked_holder_keeps_the_connection_open(result: ClaimResult) -> None:
    forked = case(result, "sigkill_with_forked_holder")
    assert forked["our_recv_after_child_killed"] == "timeout"
    assert forked["child_end_after_child_killed"] == "ESTABLISHED"
    assert forked["our_recv_after_grandchild_killed"] == "EOF"


@pytest.mark.kernel
@pytest.mark.root
def test_capture_shows_fin_rst_and_silence(result: ClaimResult) -> None:
    assert case(result, "sigkill")["child_sent"] == {"fin": True, "rst": False}
    assert case(result, "exit_without_close")["child_sent"] == {"fin": True, "rst": False}
    assert case(result, "sigkill_with_unread_data")["child_sent"] == {"fin": False, "rst": True}
    forked = case(result, "sigkill_with_forked_holder")
    assert forked["sent_after_child_killed"] == {"fin": False, "rst": False}
    assert forked["sent_after_grandchild_killed"]["fin"] is True
    assert any("Flags [F.]" in line for line in result.trace)


@pytest.mark.kernel
def test_the_verdict_needs_fin_when_captured(result: ClaimResult) -> None:
    if result.observed["captured"]:
        assert all(case(result, n)["child_sent"]["fin"] for n in ("sigkill", "exit_without_close"))
    else:
        assert case(result, "sigkill")["child_sent"] == {"fin": None, "rst": None}


# --- the judge, on synthetic observations ----------------------------------------------

FIN: dict[str, bool | None] = {"fin": True, "rst": False}
NONE: dict[str, bool | None] = {"fin": None, "rst": None}
FORKED = process_kill.ForkedHolder(
    "timeout", "ESTABLISHED", {"fin": False, "rst": False}, "EOF", 1.0, FIN, 0.2
)


def ended(recv: str, sent: dict[str, bool | None]) -> process_kill.Repeated:
    return process_kill.Repeated(process_kill.Ending(recv, sent, None), 1.2, 3, True)


def test_judge_confirms_a_fin_for_kill_and_exit_and_tells_the_exceptions() -> None:
    unread = ended("ECONNRESET", {"fin": False, "rst": True})
    result = process_kill.judge_c26(ended("EOF", FIN), ended("EOF", FIN), unread, FORKED, True, [])
    assert result.verdict is Verdict.CONFIRMED
    assert "SIGKILL: our recv() got EOF 1.2 ms after kill()" in result.summary
    assert "Unless data was unread: then ECONNRESET (no FIN, RST)" in result.summary
    assert result.observed["sigkill"]["same_every_round"] is True
    uncaptured = process_kill.judge_c26(
        ended("EOF", NONE), ended("EOF", NONE), unread, FORKED, False, []
    )
    assert [p.holds for p in uncaptured.parts] == [True, True, None]


def test_judge_says_differs_when_a_dying_process_resets() -> None:
    reset = ended("ECONNRESET", {"fin": False, "rst": True})
    result = process_kill.judge_c26(ended("EOF", FIN), reset, reset, FORKED, True, [])
    assert [p.holds for p in result.parts] == [True, False, False]
    assert result.verdict is Verdict.PARTLY and "exit: our recv() got ECONNRESET" in result.summary
    both = process_kill.judge_c26(reset, reset, reset, FORKED, True, [])
    assert both.verdict is Verdict.DIFFERS
