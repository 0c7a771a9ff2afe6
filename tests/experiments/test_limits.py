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


@pytest.mark.kernel
def test_accept_fails_with_emfile_at_the_descriptor_limit(
    loops: dict[str, dict[str, Any]], result: ClaimResult
) -> None:
    for flavour in ("selector", "naive", "asyncio"):
        assert loops[flavour]["accept_error"] == "EMFILE", flavour
        assert loops[flavour]["highest_fd"] == limits.DESCRIPTOR_LIMIT - 1, flavour
        assert loops[flavour]["accepted"] < limits.DESCRIPTOR_LIMIT, flavour
    # ulimit -n is shown; fs.file-max cannot be reached safely, so it is not observed
    assert [p.holds for p in result.parts] == [True, None]
    assert result.verdict is Verdict.PARTLY


@pytest.mark.kernel
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


@pytest.mark.kernel
def test_pausing_on_emfile_costs_no_cpu_retrying_spins(loops: dict[str, dict[str, Any]]) -> None:
    window = loops["selector"]["window_ms"]
    paused = [loops[flavour]["cpu_ms_over_window"] for flavour in ("selector", "asyncio")]
    spinning = loops["naive"]["cpu_ms_over_window"]
    assert max(paused) <= 0.2 * window
    # on a loaded machine the spinning child gets only its share of a core,
    # so it is compared with the paused loops rather than with the wall clock
    assert spinning >= 0.1 * window and spinning >= 4 * max(*paused, 1)


@pytest.mark.kernel
def test_freeing_descriptors_lets_accept_resume(loops: dict[str, dict[str, Any]]) -> None:
    for flavour in ("selector", "asyncio"):
        recovery = loops[flavour]["recovery"]
        assert recovery["accepted_again"] >= limits.FREED, flavour
    assert loops["selector"]["recovery"]["first_accept_after_freeing_ms"] < 500


@pytest.mark.kernel
def test_asyncio_reports_emfile_and_retries_about_a_second_later(
    loops: dict[str, dict[str, Any]],
) -> None:
    asyncio_loop = loops["asyncio"]
    assert asyncio_loop["error_message"] == "socket.accept() out of system resource"
    assert asyncio_loop["reports_per_burst"][0] >= 1
    assert 700 <= asyncio_loop["recovery"]["first_accept_after_last_emfile_ms"] <= 2000


@pytest.mark.kernel
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


# --- the judge, on synthetic observations ----------------------------------------------


def synthetic(
    *, error: str | None = "EMFILE", highest_fd: int = 31, without_descriptor: int = 11
) -> limits.LimitsSeen:
    edge = limits.AtLimit(
        accepted=29,
        highest_fd=highest_fd,
        accept_error=error,
        error_message=None,
        kernel=limits.KernelView(without_descriptor, without_descriptor, 29),
        client_states={"ESTABLISHED": TOTAL},
        queued_client_send=limits.QueuedClientSend(4, 4, False),
    )
    selector = limits.LoopRun(raise_past_nr_open="ValueError", at_limit=edge)
    naive = limits.LoopRun(at_limit=edge, cpu_ms_over_window=290, window_ms=300)
    in_force = {"ulimit -n (RLIMIT_NOFILE soft, hard)": [1024, 4096], "fs.file-max": "99"}
    return limits.LimitsSeen(in_force, 32, False, {"selector": selector, "naive": naive})


def test_judge_holds_emfile_at_the_limit_with_connections_queued_past_it() -> None:
    result = limits.judge_c37(synthetic())
    assert [p.holds for p in result.parts] == [True, None]
    assert "not exercised: fs.file-max is 99" in result.summary
    assert "failed with EMFILE" in result.summary and "11 more" in result.summary
    assert "naive retry loop burned 290 ms CPU in 300 ms" in result.summary
    assert "asyncio" not in result.summary  # no asyncio loop in this observation
    assert result.observed["accept_loops"]["selector"]["kernel"]["accept_queue"] == 11


@pytest.mark.parametrize(
    "changed",
    [{"error": "ENFILE"}, {"highest_fd": 20}, {"without_descriptor": 0}],
    ids=["another errno", "stopped below the limit", "kernel completed nothing more"],
)
def test_judge_says_differs_when_one_observation_breaks_the_claim(changed: dict[str, Any]) -> None:
    result = limits.judge_c37(synthetic(**changed))
    assert [p.holds for p in result.parts] == [changed.get("without_descriptor") == 0, None]


def test_judge_skips_when_the_accept_loop_never_ran() -> None:
    seen = limits.LimitsSeen({}, 32, False, {"selector": limits.LoopRun(unavailable="no start")})
    result = limits.judge_c37(seen)
    assert result.verdict is Verdict.SKIPPED and "no start" in result.summary
