"""C37 on this kernel: RLIMIT_NOFILE bounds accepted connections, not the kernel's."""

from __future__ import annotations

from typing import Any

import pytest

from framelab.experiments import limits
from framelab.experiments.context import RunContext
from framelab.experiments.result import ClaimResult, Verdict

TOTAL = limits.DESCRIPTOR_LIMIT + limits.EXTRA_CONNECTIONS


@pytest.fixture(scope="module")
def result() -> ClaimResult:
    (only,) = limits.run(RunContext(rounds=2, quick=True))
    return only


@pytest.fixture(scope="module")
def loops(result: ClaimResult) -> dict[str, dict[str, Any]]:
    if result.verdict is Verdict.SKIPPED:  # only a child that cannot start at all may skip
        if "could not start a child Python" not in result.summary:
            pytest.fail(result.summary)
        pytest.skip(result.summary)
    loops: dict[str, dict[str, Any]] = result.observed["accept_loops"]
    return loops


def test_accept_fails_with_emfile_at_the_descriptor_limit(
    loops: dict[str, dict[str, Any]], result: ClaimResult
) -> None:
    for flavour in ("selector", "naive", "asyncio"):
        assert loops[flavour]["accept_error"] == "EMFILE", flavour
        assert loops[flavour]["highest_fd"] == limits.DESCRIPTOR_LIMIT - 1, flavour
        assert loops[flavour]["accepted"] < limits.DESCRIPTOR_LIMIT, flavour
    assert result.verdict is Verdict.CONFIRMED


def test_the_kernel_completes_connections_past_the_limit(
    loops: dict[str, dict[str, Any]],
) -> None:
    selector = loops["selector"]
    kernel = selector["kernel"]
    assert kernel["held_by_child"] == selector["accepted"]
    assert kernel["established_without_descriptor"] == kernel["accept_queue"]
    assert selector["accepted"] + kernel["accept_queue"] == TOTAL
    assert selector["client_states"] == {"ESTABLISHED": TOTAL}
    assert selector["queued_client_send"] == {
        "sent_bytes": 4,
        "server_row_rx_queue": 4,
        "server_row_has_descriptor": False,
    }


def test_pausing_on_emfile_costs_no_cpu_retrying_spins(loops: dict[str, dict[str, Any]]) -> None:
    window = loops["selector"]["window_ms"]
    assert loops["selector"]["cpu_ms_over_window"] <= 0.2 * window
    assert loops["asyncio"]["cpu_ms_over_window"] <= 0.2 * window
    assert loops["naive"]["cpu_ms_over_window"] >= 0.3 * window


def test_freeing_descriptors_lets_accept_resume(loops: dict[str, dict[str, Any]]) -> None:
    for flavour in ("selector", "asyncio"):
        recovery = loops[flavour]["recovery"]
        assert recovery["accepted_again"] >= limits.FREED, flavour
    assert loops["selector"]["recovery"]["first_accept_after_freeing_ms"] < 500


def test_asyncio_reports_emfile_and_retries_about_a_second_later(
    loops: dict[str, dict[str, Any]],
) -> None:
    asyncio_loop = loops["asyncio"]
    assert asyncio_loop["error_message"] == "socket.accept() out of system resource"
    assert asyncio_loop["reports_per_burst"][0] >= 1
    assert 700 <= asyncio_loop["recovery"]["first_accept_after_last_emfile_ms"] <= 2000


def test_uvloop_leaves_no_connection_unaccounted(loops: dict[str, dict[str, Any]]) -> None:
    uv = loops["uvloop"]
    assert "unavailable" not in uv, uv  # uvloop is a dependency: its child must run
    shed = uv["client_states"].get("CLOSE_WAIT", 0)
    assert uv["accepted"] + shed + uv["kernel"]["accept_queue"] == TOTAL


def test_the_limits_in_force_are_read() -> None:
    seen = limits.limits_in_force()
    soft, hard = seen["ulimit -n (RLIMIT_NOFILE soft, hard)"]
    assert 0 < soft <= hard
    assert int(seen["fs.file-max"]) > 0
    assert hard <= int(seen["fs.nr_open"])
    assert len(seen["fs.file-nr (allocated, free, max)"]) == 3
