"""C25 on this kernel: after the peer's FIN the first send succeeds, RST comes
back, the next send fails with EPIPE; what asyncio and uvloop make of it."""

from __future__ import annotations

import copy
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


@pytest.mark.kernel
def test_verdict_follows_the_second_send(result: ClaimResult) -> None:
    after_fin = copy.deepcopy(seen(result, "after_fin"))
    after_fin["second_send"] = "sent 100"  # a kernel that kept accepting writes
    verdict = broken_pipe.judge_c25(
        after_fin,
        seen(result, "after_rst_without_fin"),
        seen(result, "sigpipe"),
        seen(result, "event_loops"),
        [],
    ).verdict
    assert verdict is Verdict.DIFFERS


@pytest.mark.kernel
def test_without_a_capture_the_state_change_stands_for_the_rst(result: ClaimResult) -> None:
    after_fin = copy.deepcopy(seen(result, "after_fin"))
    after_fin["peer_rst_captured"] = None  # not root
    after_rst, pipe_signal = seen(result, "after_rst_without_fin"), seen(result, "sigpipe")
    verdict = broken_pipe.judge_c25(after_fin, after_rst, pipe_signal, {}, []).verdict
    assert verdict is Verdict.CONFIRMED
    after_fin["state_after_first_send"] = "CLOSE_WAIT"  # no RST came back
    verdict = broken_pipe.judge_c25(after_fin, after_rst, pipe_signal, {}, []).verdict
    assert verdict is Verdict.DIFFERS
