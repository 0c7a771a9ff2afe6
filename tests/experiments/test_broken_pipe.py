"""C25 on this kernel: after the peer's FIN the first send succeeds, RST comes
back, the next send fails with EPIPE; what asyncio and uvloop make of it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from framelab.experiments import broken_pipe
from framelab.experiments.context import RunContext
from framelab.experiments.result import ClaimResult, Verdict


@pytest.fixture(scope="module")
def result() -> ClaimResult:
    [claim] = broken_pipe.run(RunContext(rounds=2, quick=True))
    return claim


def seen(result: ClaimResult, key: str) -> dict[str, Any]:
    value: dict[str, Any] = result.observed[key]
    return value


@pytest.mark.kernel
def test_first_send_after_fin_succeeds_and_the_next_fails_with_epipe(
    result: ClaimResult,
) -> None:
    after_fin = seen(result, "after_fin")
    assert after_fin["recv_after_peer_close"] == "EOF"
    assert after_fin["state_before_write"] == "CLOSE_WAIT"
    assert after_fin["first_send"] == "sent 100"
    assert after_fin["state_after_first_send"] == "CLOSE"  # the peer's RST arrived
    assert after_fin["second_send"] == "EPIPE"
    assert after_fin["third_send"] == "EPIPE"
    assert after_fin["counters"]["Tcp.OutRsts"] >= 1
    assert result.verdict is Verdict.CONFIRMED


@pytest.mark.kernel
def test_rst_without_fin_fails_the_first_send_with_econnreset(result: ClaimResult) -> None:
    after_rst = seen(result, "after_rst_without_fin")
    assert after_rst["state_before_write"] == "CLOSE"
    assert after_rst["first_send"] == "ECONNRESET"
    assert after_rst["second_send"] == "EPIPE"


@pytest.mark.kernel
def test_python_ignores_sigpipe_and_the_default_kills(result: ClaimResult) -> None:
    assert seen(result, "sigpipe") == {
        "python_sigpipe": "SIG_IGN",
        "child_with_default_sigpipe": "killed by SIGPIPE",
    }


@pytest.mark.kernel
def test_asyncio_write_never_raises_drain_does(result: ClaimResult) -> None:
    aio = seen(result, "event_loops")["asyncio"]
    assert aio["saw_eof"] is True
    assert aio["write_raised"] is None
    assert aio["drain_raised_first_at"] == 2  # the first write went out; the second failed
    assert aio["drain_raised"].startswith("ConnectionResetError")
    assert aio["drain_raised_later"] == ["BrokenPipeError EPIPE"]
    assert aio["warnings"] >= 1 and aio["warning_first_at"] > aio["drain_raised_first_at"]


@pytest.mark.kernel
def test_uvloop_drain_raises_at_the_same_write(result: ClaimResult) -> None:
    loops = seen(result, "event_loops")
    if "uvloop" not in loops:
        pytest.skip("uvloop is not installed")
    uv = loops["uvloop"]
    assert uv["drain_raised_first_at"] == 2
    assert uv["drain_raised"].startswith("ConnectionResetError")
    assert uv["write_raised"] is None or uv["write_raised"].startswith("RuntimeError")


@pytest.mark.kernel
@pytest.mark.root
def test_capture_shows_fin_data_then_rst(result: ClaimResult) -> None:
    assert seen(result, "after_fin")["peer_rst_captured"] is True
    second_title = next(i for i, line in enumerate(result.trace) if i and line.startswith("#"))
    fin_section = result.trace[:second_title]
    flags = [line.split("Flags ")[1].split(",")[0] for line in fin_section if "Flags" in line]
    assert flags[-3:] == ["[F.]", "[P.]", "[R]"]


FIN = broken_pipe.AfterFin("EOF", "CLOSE_WAIT", "sent 100", "CLOSE", True, "EPIPE", "EPIPE",
                           {"Tcp.OutRsts": 1})  # fmt: skip
RST = broken_pipe.AfterRst("CLOSE", "ECONNRESET", "EPIPE")
PIPE = broken_pipe.SigPipe("SIG_IGN", "killed by SIGPIPE")


def holds(after_fin: broken_pipe.AfterFin) -> list[bool | None]:
    return [p.holds for p in broken_pipe.judge_c25(after_fin, RST, PIPE, {}, []).parts]


def test_c25_judged_part_by_part_on_synthetic_observations() -> None:
    assert holds(FIN) == [True, True, True]
    assert broken_pipe.judge_c25(FIN, RST, PIPE, {}, []).verdict is Verdict.CONFIRMED
    kept_accepting = replace(FIN, second_send="sent 100")  # a kernel that kept taking writes
    assert holds(kept_accepting) == [True, True, False]
    assert broken_pipe.judge_c25(kept_accepting, RST, PIPE, {}, []).verdict is Verdict.PARTLY
    refused_at_once = replace(FIN, first_send="EPIPE", peer_rst_captured=False)
    assert holds(refused_at_once) == [False, False, True]


def test_without_a_capture_the_state_change_stands_for_the_rst() -> None:
    not_root = replace(FIN, peer_rst_captured=None)
    assert holds(not_root) == [True, True, True]
    assert "not captured (needs root)" in broken_pipe.judge_c25(not_root, RST, PIPE, {}, []).summary
    assert holds(replace(not_root, state_after_first_send="CLOSE_WAIT")) == [True, False, True]
