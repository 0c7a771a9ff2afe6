"""C21-C24, C28 on this kernel: shutdown vs close, shared descriptors, the
errors after them, and RST for close() with unread data (plain and asyncio)."""

from __future__ import annotations

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
HALF = {"peer_recv_after_shut_wr": "EOF", "reverse_data_received": True,
        "fileno_after_shutdown": 5, "getsockname_after_shutdown": True,
        "state_after_shutdown": "FIN_WAIT2", "fileno_after_close": -1,
        "getsockname_after_close": False, "getsockname_error_after_close": "EBADF"}  # fmt: skip
BOTH = {"peer_recv": "EOF", "own_recv": "EOF", "fileno": 6, "getsockname": True}
SHARED = {"peer_recv_after_one_close": "timeout", "client_state_after_one_close": "ESTABLISHED",
          "client_sent_after_one_close": {"fin": False, "rst": False},
          "peer_recv_after_shutdown_via_another_fd": "EOF", "send_error_on_other_fd": "EPIPE",
          "quiet_window_s": 0.2}  # fmt: skip
UNREAD = {"client_recv": "ECONNRESET", "server_state_after_close": None,
          "abort_on_close_delta": 1, "unread_bytes_at_close": 224,
          "server_sent": {"fin": False, "rst": True}}  # fmt: skip
READ = {**UNREAD, "client_recv": "EOF", "server_sent": {"fin": True, "rst": False}}


def holds(parts: list[Any]) -> list[bool | None]:
    return [p.holds for p in parts]


def test_c21_parts_follow_each_observation() -> None:
    assert holds(shutdown_close.c21_parts(HALF, BOTH)) == [True, True, True, True]
    one_way = {**HALF, "reverse_data_received": False}
    assert holds(shutdown_close.c21_parts(one_way, BOTH)) == [False, True, True, True]
    kept = {**HALF, "fileno_after_close": 5, "getsockname_after_close": True}
    assert holds(shutdown_close.c21_parts(kept, BOTH)) == [True, True, True, False]


def test_c22_parts_follow_each_observation() -> None:
    assert holds(shutdown_close.c22_parts(SHARED)) == [True, True]
    fin = {**SHARED, "client_sent_after_one_close": {"fin": True, "rst": False}}
    assert holds(shutdown_close.c22_parts(fin)) == [False, True]
    uncaptured = {**SHARED, "client_sent_after_one_close": {"fin": None, "rst": None}}
    parts = shutdown_close.c22_parts(uncaptured)
    assert holds(parts) == [True, True] and "not captured" in parts[0].evidence


def test_c28_parts_and_the_asyncio_sentence_come_from_the_run() -> None:
    streams = {"asyncio_reading": {"client_recv": "EOF"},
               "asyncio_paused_reading": {"client_recv": "ECONNRESET"}}  # fmt: skip
    parts = shutdown_close.c28_parts(UNREAD, READ, streams)
    assert holds(parts) == [True, True]
    assert "already read the data" in parts[1].evidence
    odd = {"asyncio_reading": {"client_recv": "ECONNRESET"},
           "asyncio_paused_reading": {"client_recv": "ECONNRESET"}}  # fmt: skip
    assert "already read" not in shutdown_close.c28_parts(UNREAD, READ, odd)[1].evidence
    fin_anyway = {**UNREAD, "client_recv": "EOF", "server_sent": {"fin": True, "rst": False},
                  "abort_on_close_delta": 0, "server_state_after_close": "FIN_WAIT2"}  # fmt: skip
    assert holds(shutdown_close.c28_parts(fin_anyway, READ, streams)) == [False, False]
