"""C21-C24, C28 on this kernel: shutdown vs close, shared descriptors, the
errors after them, and RST for close() with unread data (plain and asyncio)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from framelab.experiments import shutdown_close
from framelab.experiments.context import RunContext
from framelab.experiments.result import ClaimResult, Verdict


@pytest.fixture(scope="module")
def results() -> dict[str, ClaimResult]:
    return {r.claim: r for r in shutdown_close.run(RunContext(rounds=2, quick=True))}


@pytest.mark.kernel
def test_every_claim_is_answered_with_its_own_result(results: dict[str, ClaimResult]) -> None:
    assert sorted(results) == ["C21", "C22", "C23", "C24", "C28"]
    assert all(r.experiment == "shutdown_close" for r in results.values())


@pytest.mark.kernel
def test_c21_half_close_keeps_the_descriptor_close_releases_it(
    results: dict[str, ClaimResult],
) -> None:
    half: dict[str, Any] = results["C21"].observed["shut_wr_then_close"]
    assert half["peer_recv_after_shut_wr"] == "EOF" and half["reverse_data_received"]
    assert half["fileno_after_shutdown"] >= 0 and half["getsockname_after_shutdown"]
    assert half["state_after_shutdown"] == "FIN_WAIT2"
    assert half["fileno_after_close"] == -1
    assert half["getsockname_error_after_close"] == "EBADF"
    both = results["C21"].observed["shut_rdwr"]
    assert both["peer_recv"] == both["own_recv"] == "EOF" and both["getsockname"]
    assert results["C21"].verdict is Verdict.CONFIRMED


@pytest.mark.kernel
def test_c22_closing_one_descriptor_sends_nothing_shutdown_reaches_all(
    results: dict[str, ClaimResult],
) -> None:
    seen = results["C22"].observed
    assert seen["peer_recv_after_one_close"] == "timeout"
    assert seen["client_state_after_one_close"] == "ESTABLISHED"
    assert seen["peer_recv_after_shutdown_via_another_fd"] == "EOF"
    assert seen["send_error_on_other_fd"] == "EPIPE"
    assert results["C22"].verdict is Verdict.CONFIRMED


@pytest.mark.kernel
def test_c23_send_after_shut_wr_is_epipe(results: dict[str, ClaimResult]) -> None:
    seen = results["C23"].observed
    assert (seen["exception"], seen["errno"]) == ("BrokenPipeError", "EPIPE")
    assert seen["sigpipe_disposition"] == "SIG_IGN"  # Python ignores SIGPIPE: an error, no signal
    assert results["C23"].verdict is Verdict.CONFIRMED


@pytest.mark.kernel
def test_c24_recv_after_close_is_ebadf(results: dict[str, ClaimResult]) -> None:
    seen = results["C24"].observed
    assert (seen["exception"], seen["errno"]) == ("OSError", "EBADF")
    assert "Bad file descriptor" in seen["message"]


@pytest.mark.kernel
def test_c28_unread_data_turns_close_into_rst(results: dict[str, ClaimResult]) -> None:
    unread = results["C28"].observed["unread_close"]
    assert unread["unread_bytes_at_close"] > 0
    assert unread["client_recv"] == "ECONNRESET"
    assert unread["server_state_after_close"] is None  # no TIME_WAIT after an abort
    assert unread["abort_on_close_delta"] >= 1
    control = results["C28"].observed["read_then_close"]
    assert control["client_recv"] == "EOF" and control["unread_bytes_at_close"] == 0
    assert results["C28"].verdict is Verdict.CONFIRMED


@pytest.mark.kernel
def test_c28_asyncio_has_already_read_so_close_sends_fin(results: dict[str, ClaimResult]) -> None:
    streams = results["C28"].observed["asyncio_streams"]
    assert set(streams) == {
        "asyncio_reading",
        "asyncio_paused_reading",
        "uvloop_reading",
        "uvloop_paused_reading",
    }
    for loop in ("asyncio", "uvloop"):
        reading, paused = streams[f"{loop}_reading"], streams[f"{loop}_paused_reading"]
        assert reading["kernel_unread_bytes_at_close"] == 0  # the loop read it all
        assert reading["client_recv"] == "EOF"
        assert paused["kernel_unread_bytes_at_close"] > 0
        assert paused["client_recv"] == "ECONNRESET"


@pytest.mark.kernel
@pytest.mark.root
def test_capture_shows_which_segment_left(results: dict[str, ClaimResult]) -> None:
    assert results["C21"].observed["shut_wr_then_close"]["client_sent_after_shutdown"]["fin"]
    silent = results["C22"].observed["client_sent_after_one_close"]
    assert silent == {"fin": False, "rst": False}
    assert results["C22"].observed["client_sent_after_shutdown"]["fin"] is True
    assert results["C28"].observed["unread_close"]["server_sent"] == {"fin": False, "rst": True}
    assert results["C28"].observed["read_then_close"]["server_sent"] == {"fin": True, "rst": False}
    streams = results["C28"].observed["asyncio_streams"]
    assert streams["uvloop_reading"]["server_sent"] == {"fin": True, "rst": False}
    assert streams["asyncio_paused_reading"]["server_sent"] == {"fin": False, "rst": True}
    assert all(len(r.trace) <= 30 for r in results.values())


def test_without_root_nothing_is_captured_and_verdicts_stand() -> None:
    results = shutdown_close.run(RunContext(rounds=1, quick=True, root=False))
    assert all(r.trace == [] for r in results)
    assert all(r.verdict is Verdict.CONFIRMED for r in results)
    assert results[-1].observed["unread_close"]["server_sent"] == {"fin": None, "rst": None}


# --- the judges, on synthetic observations -----------------------------------------------
NO_FLAGS = shutdown_close.WireFlags(fin=False, rst=False)
FIN = shutdown_close.WireFlags(fin=True, rst=False)
RST = shutdown_close.WireFlags(fin=False, rst=True)
UNCAPTURED = shutdown_close.WireFlags(fin=None, rst=None)
HALF = shutdown_close.HalfClose(
    peer_recv_after_shut_wr="EOF",
    reverse_data_received=True,
    fileno_after_shutdown=5,
    getsockname_after_shutdown=True,
    state_after_shutdown="FIN_WAIT2",
    client_sent_after_shutdown=FIN,
    fileno_after_close=-1,
    getsockname_after_close=False,
    getsockname_error_after_close="EBADF",
)
BOTH = shutdown_close.ShutBoth(peer_recv="EOF", own_recv="EOF", fileno=6, getsockname=True)
SHARED = shutdown_close.SharedSocket(
    peer_recv_after_one_close="timeout",
    client_state_after_one_close="ESTABLISHED",
    client_sent_after_one_close=NO_FLAGS,
    peer_recv_after_shutdown_via_another_fd="EOF",
    send_error_on_other_fd="EPIPE",
    client_sent_after_shutdown=FIN,
    quiet_window_s=0.2,
)
UNREAD = shutdown_close.CloseWithData(
    server_readable_before_close=True,
    unread_bytes_at_close=224,
    client_recv="ECONNRESET",
    server_state_after_close=None,
    abort_on_close_delta=1,
    server_sent=RST,
)
READ = replace(UNREAD, unread_bytes_at_close=0, client_recv="EOF", server_sent=FIN)
STREAMS = {
    "asyncio_reading": shutdown_close.AsyncioClose(0, "EOF", FIN),
    "asyncio_paused_reading": shutdown_close.AsyncioClose(224, "ECONNRESET", RST),
}


def holds(result: ClaimResult) -> list[bool | None]:
    return [p.holds for p in result.parts]


def test_c21_judge_follows_each_observation() -> None:
    result = shutdown_close.judge_c21(HALF, BOTH, [])
    assert holds(result) == [True, True, True, True]
    assert result.verdict is Verdict.CONFIRMED
    assert "(we were FIN_WAIT2)" in result.parts[0].evidence
    assert "fileno() 5 after SHUT_WR and 6 after SHUT_RDWR" in result.parts[2].evidence
    assert "fileno() is -1 and getsockname() fails EBADF" in result.parts[3].evidence
    one_way = replace(HALF, reverse_data_received=False)
    assert holds(shutdown_close.judge_c21(one_way, BOTH, [])) == [False, True, True, True]
    rdwr_data = replace(BOTH, own_recv="data")
    result = shutdown_close.judge_c21(HALF, rdwr_data, [])
    assert holds(result) == [True, False, True, True]
    assert "our own recv() data" in result.parts[1].evidence
    released = replace(HALF, fileno_after_shutdown=-1, getsockname_after_shutdown=False)
    result = shutdown_close.judge_c21(released, BOTH, [])
    assert holds(result) == [True, True, False, True]
    assert "fileno() -1 after SHUT_WR" in result.parts[2].evidence
    kept = replace(HALF, fileno_after_close=5, getsockname_after_close=True)
    result = shutdown_close.judge_c21(kept, BOTH, [])
    assert holds(result) == [True, True, True, False]
    assert "fileno() is 5 and getsockname() still works" in result.parts[3].evidence


def test_c21_observed_keeps_its_keys_in_order() -> None:
    observed = shutdown_close.judge_c21(HALF, BOTH, []).observed
    assert list(observed) == ["shut_wr_then_close", "shut_rdwr"]
    assert list(observed["shut_wr_then_close"]) == [
        "peer_recv_after_shut_wr",
        "reverse_data_received",
        "fileno_after_shutdown",
        "getsockname_after_shutdown",
        "state_after_shutdown",
        "client_sent_after_shutdown",
        "fileno_after_close",
        "getsockname_after_close",
        "getsockname_error_after_close",
    ]
    assert observed["shut_wr_then_close"]["client_sent_after_shutdown"] == {
        "fin": True,
        "rst": False,
    }
    assert observed["shut_rdwr"] == {"peer_recv": "EOF", "own_recv": "EOF", "fileno": 6,
                                     "getsockname": True}  # fmt: skip


def test_c22_judge_follows_each_observation() -> None:
    result = shutdown_close.judge_c22(SHARED, [])
    assert holds(result) == [True, True]
    assert "gave timeout within 0.2 s" in result.parts[0].evidence
    assert "on the wire: no FIN, no RST" in result.parts[0].evidence
    fin = replace(SHARED, client_sent_after_one_close=FIN)
    result = shutdown_close.judge_c22(fin, [])
    assert holds(result) == [False, True]
    assert "a FIN, no RST" in result.parts[0].evidence
    uncaptured = replace(SHARED, client_sent_after_one_close=UNCAPTURED)
    result = shutdown_close.judge_c22(uncaptured, [])
    assert holds(result) == [True, True] and "not captured" in result.parts[0].evidence
    sent = replace(SHARED, send_error_on_other_fd=None)
    result = shutdown_close.judge_c22(sent, [])
    assert holds(result) == [True, False]
    assert "failed None" in result.parts[1].evidence
    assert list(result.observed)[-1] == "quiet_window_s"
    assert result.observed["client_sent_after_shutdown"] == {"fin": True, "rst": False}


def test_c23_judge_needs_epipe() -> None:
    broken = shutdown_close.SendAfterShutdown("BrokenPipeError", "EPIPE", "Broken pipe", "SIG_IGN")
    result = shutdown_close.judge_c23(broken)
    assert holds(result) == [True]
    assert "raised BrokenPipeError (EPIPE, 'Broken pipe'); SIGPIPE is SIG_IGN" in result.summary
    assert list(result.observed) == ["exception", "errno", "strerror", "sigpipe_disposition"]
    sent = shutdown_close.SendAfterShutdown(None, None, None, "SIG_DFL")
    result = shutdown_close.judge_c23(sent)
    assert holds(result) == [False] and "SIGPIPE is SIG_DFL" in result.summary


def test_c24_judge_needs_an_error() -> None:
    ebadf = shutdown_close.RecvAfterClose("OSError", "EBADF", "[Errno 9] Bad file descriptor", -1)
    result = shutdown_close.judge_c24(ebadf)
    assert holds(result) == [True]
    assert "raised OSError EBADF ('[Errno 9] Bad file descriptor'); fileno() was -1" in (
        result.summary
    )
    assert list(result.observed) == ["exception", "errno", "message", "fileno_after_close"]
    returned = shutdown_close.RecvAfterClose(None, None, None, 7)
    result = shutdown_close.judge_c24(returned)
    assert holds(result) == [False] and "without an error" in result.summary


def test_c28_judge_and_the_asyncio_sentence_come_from_the_run() -> None:
    result = shutdown_close.judge_c28(UNREAD, READ, STREAMS, [])
    assert holds(result) == [True, True]
    first, second = (p.evidence for p in result.parts)
    assert "close() with 224 unread bytes: client ECONNRESET, server end gone" in first
    assert "TCPAbortOnClose +1, on the wire: no FIN, RST" in first
    assert "gave the client EOF (FIN, no RST)" in second
    assert "asyncio_reading: client EOF, asyncio_paused_reading: client ECONNRESET" in second
    assert "already read the data" in second
    assert list(result.observed["asyncio_streams"]["asyncio_paused_reading"]) == [
        "kernel_unread_bytes_at_close",
        "client_recv",
        "server_sent",
    ]
    odd = {k: replace(v, client_recv="ECONNRESET") for k, v in STREAMS.items()}
    assert "already read" not in shutdown_close.judge_c28(UNREAD, READ, odd, []).parts[1].evidence
    fin_anyway = replace(UNREAD, client_recv="EOF", server_sent=FIN, abort_on_close_delta=0,
                         server_state_after_close="FIN_WAIT2")  # fmt: skip
    result = shutdown_close.judge_c28(fin_anyway, READ, STREAMS, [])
    assert holds(result) == [False, False]
    assert "server end FIN_WAIT2, TCPAbortOnClose +0" in result.parts[0].evidence
    uncaptured = replace(UNREAD, server_sent=UNCAPTURED)
    control_uncaptured = replace(READ, server_sent=UNCAPTURED)
    result = shutdown_close.judge_c28(uncaptured, control_uncaptured, STREAMS, [])
    assert holds(result) == [True, True] and "on the wire: not captured" in result.summary
    control_reset = replace(READ, client_recv="ECONNRESET", server_sent=RST)
    result = shutdown_close.judge_c28(UNREAD, control_reset, STREAMS, [])
    assert holds(result) == [True, False]
    assert "gave the client ECONNRESET (no FIN, RST)" in result.parts[1].evidence
