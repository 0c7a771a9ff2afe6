"""C31 on this kernel: send() needs no flush, makefile("wb") does, asyncio's
write() sends at once and drain() is flow control."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from framelab.experiments import flush
from framelab.experiments.context import RunContext
from framelab.experiments.result import ClaimResult, Verdict


@pytest.fixture(scope="module")
def result() -> ClaimResult:
    [claim] = flush.run(RunContext(rounds=2, quick=True))
    return claim


def loops(result: ClaimResult) -> dict[str, dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = result.observed["event_loops"]
    return seen


@pytest.mark.kernel
def test_raw_send_is_readable_at_the_peer_at_once(result: ClaimResult) -> None:
    raw = result.observed["raw_send"]
    assert raw["peer_readable"] and raw["peer_got"] == "hello"
    assert raw["segments_sent"] == 1


@pytest.mark.kernel
def test_buffered_wrapper_sends_nothing_until_flush(result: ClaimResult) -> None:
    wrapped = result.observed["makefile_wb"]
    assert wrapped["peer_readable_after_write"] is False
    assert wrapped["segments_after_write"] == 0
    assert wrapped["peer_readable_after_flush"] is True
    assert wrapped["segments_after_flush"] == 1
    assert wrapped["peer_got"] == "hello"
    assert wrapped["larger_than_buffer_sent_without_flush"] is True
    assert result.verdict is Verdict.CONFIRMED


@pytest.mark.kernel
def test_event_loop_write_reaches_the_peer_before_any_drain(result: ClaimResult) -> None:
    assert "asyncio" in loops(result)
    for seen in loops(result).values():
        assert seen["buffered_after_write"] == 0
        assert seen["peer_readable_before_drain"] is True
        assert seen["peer_got"] == "hello"


@pytest.mark.kernel
def test_drain_waits_while_the_peer_reads_nothing(result: ClaimResult) -> None:
    for seen in loops(result).values():
        low, high = seen["write_buffer_limits"]["low"], seen["write_buffer_limits"]["high"]
        assert seen["buffered_when_drain_called"] > high
        assert seen["drain_blocked_while_peer_idle"] is True
        assert seen["peer_read_everything"] is True
        assert seen["buffered_after_drain"] <= low


@pytest.mark.kernel
def test_asyncio_low_water_is_a_quarter_of_high(result: ClaimResult) -> None:
    limits = loops(result)["asyncio"]["write_buffer_limits"]
    assert limits == {"low": 16384, "high": 65536}


@pytest.mark.kernel
@pytest.mark.root
def test_capture_sees_the_segment_right_after_send_and_flush(result: ClaimResult) -> None:
    assert result.observed["makefile_wb"]["captured_data_before_flush"] is False
    assert 0 <= result.observed["raw_send"]["captured_segment_after_ms"] < 100
    assert 0 <= result.observed["makefile_wb"]["captured_segment_after_flush_ms"] < 100
    assert sum("length 5 " in line for line in result.trace) == 2


@pytest.mark.kernel
def test_verdict_follows_the_observations(result: ClaimResult) -> None:
    wrapped = copy.deepcopy(result.observed["makefile_wb"])
    wrapped["peer_readable_after_write"] = True  # a wrapper that did not buffer
    judged = flush.judge_c31(result.observed["raw_send"], wrapped, loops(result), [])
    assert [p.holds for p in judged.parts] == [True, False, True]
    assert judged.verdict is Verdict.PARTLY
    raw = {**result.observed["raw_send"], "peer_readable": False}  # a send() that waited too
    judged = flush.judge_c31(raw, wrapped, loops(result), [])
    assert [p.holds for p in judged.parts] == [False, False, True]
